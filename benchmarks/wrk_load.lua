-- wrk script for benchmarks/api_load.py: POST /v1/orders or GET positions at a constant
-- target rate (wrk has no rate option: each thread paces its requests with delay()).
--
--   wrk -t2 -c64 -d10s -s benchmarks/wrk_load.lua http://127.0.0.1:8000 \
--       -- <config file> <requests/s per thread> <tag> <orders|positions>
--
-- Config file, one item a line:  A <account id> <bearer token>
--                                 S <symbol> <lot> <buy price> <sell price>
--
-- Pacing: a thread's k-th request is due at t0 + k / rate. delay() hands each connection
-- the next due time; a connection that is free before its due time waits, one that is
-- late (every connection was busy: the server is saturated) sends at once and the
-- lateness is counted. So the load stays open-loop as long as connections are free;
-- `late` and `max_late_us` say when it was not.
--
-- Orders: buys and sells alternate on one symbol per pair, from neighbouring accounts,
-- the buy a tick above and the sell a tick below the base price, so they cross and fill.
-- Client order ids are unique per run: <tag>-<thread>-<n>-<send time in microseconds>
-- (the send time lets the stream client measure order-to-fill latency).
--
-- done() prints one line "WRKJSON {...}" (figures) and one "ACCEPTED <order id>" line
-- per 201 answer (the benchmark checks them against the query API).

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")

local function now_us()
    ffi.C.gettimeofday(tv, nil)
    return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

-- main state: number the threads and keep them for done()
local threads = {}

function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end

-- thread state ------------------------------------------------------------------------
accounts, symbols = {}, {}
interval_us, next_us = 0, 0
tag, mode = "run", "orders"
sent, accepted, repeated, other, late, max_late_us, max_position = 0, 0, 0, 0, 0, 0, 0
statuses, ids = {}, {}

function init(args)
    for line in io.lines(args[1]) do
        local kind, a, b, c, d = line:match("^(%S+) (%S+) (%S+) ?(%S*) ?(%S*)$")
        if kind == "A" then
            table.insert(accounts, { id = a, auth = "Bearer " .. b })
        elseif kind == "S" then
            table.insert(symbols, { symbol = a, lot = tonumber(b), buy = tonumber(c),
                                    sell = tonumber(d) })
        end
    end
    local rate = tonumber(args[2]) or 0
    interval_us = rate > 0 and 1000000 / rate or 0
    tag = args[3] or tag
    mode = args[4] or mode
end

function delay()
    if interval_us <= 0 then
        return 0
    end
    local now = now_us()
    if next_us == 0 then
        next_us = now
    end
    local due = next_us
    next_us = next_us + interval_us
    if due < now then
        late = late + 1
        if now - due > max_late_us then
            max_late_us = now - due
        end
        return 0
    end
    return math.floor((due - now) / 1000)
end

function request()
    sent = sent + 1
    local n = sent
    local account = accounts[((n + id) % #accounts) + 1]
    if mode == "positions" then
        return wrk.format("GET", "/v1/accounts/" .. account.id .. "/positions",
            { ["Authorization"] = account.auth })
    end
    local s = symbols[(math.floor(n / 2) % #symbols) + 1]
    local buy = n % 2 == 0
    local body = string.format(
        '{"account_id":"%s","client_order_id":"%s-%d-%d-%.0f","symbol":"%s","side":"%s",' ..
        '"quantity":%d,"price":%d,"order_type":"limit","tif":"day"}',
        account.id, tag, id, n, now_us(), s.symbol, buy and "buy" or "sell", s.lot,
        buy and s.buy or s.sell)
    return wrk.format("POST", "/v1/orders",
        { ["Authorization"] = account.auth, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
    if status == 201 or (status == 200 and mode == "positions") then
        accepted = accepted + 1
        if mode == "orders" then
            local order_id = body:match('"order_id"%s*:%s*"([%x%-]+)"')
            if order_id then
                ids[#ids + 1] = order_id
            end
        end
    elseif status == 200 then
        repeated = repeated + 1
    else
        other = other + 1
        statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
    end
    local position = body:match('"position"%s*:%s*(%d+)')
    if position and tonumber(position) > max_position then
        max_position = tonumber(position)
    end
end

-- main state: sum the threads, print JSON ----------------------------------------------
function done(summary, latency, requests)
    local t = { sent = 0, accepted = 0, repeated = 0, other = 0, late = 0, max_late_us = 0,
                max_position = 0 }
    local status_text = {}
    local status_sum = {}
    for _, thread in ipairs(threads) do
        for _, key in ipairs({ "sent", "accepted", "repeated", "other", "late" }) do
            t[key] = t[key] + thread:get(key)
        end
        t.max_late_us = math.max(t.max_late_us, thread:get("max_late_us"))
        t.max_position = math.max(t.max_position, thread:get("max_position"))
        for code, count in pairs(thread:get("statuses")) do
            status_sum[code] = (status_sum[code] or 0) + count
        end
        for _, order_id in ipairs(thread:get("ids")) do
            io.write("ACCEPTED ", order_id, "\n")
        end
    end
    for code, count in pairs(status_sum) do
        table.insert(status_text, string.format('"%s":%d', code, count))
    end
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"duration_us":%.0f,"requests":%.0f,"errors":{"connect":%d,"read":%d,' ..
        '"write":%d,"status":%d,"timeout":%d},"latency_us":{"min":%.0f,"mean":%.1f,' ..
        '"max":%.0f,"p50":%.0f,"p90":%.0f,"p95":%.0f,"p99":%.0f},"sent":%d,"accepted":%d,' ..
        '"repeated":%d,"other":%d,"statuses":{%s},"late":%d,"max_late_us":%.0f,' ..
        '"max_position":%.0f}\n',
        summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
        latency.min, latency.mean, latency.max, latency:percentile(50),
        latency:percentile(90), latency:percentile(95), latency:percentile(99),
        t.sent, t.accepted, t.repeated, t.other, table.concat(status_text, ","), t.late,
        t.max_late_us, t.max_position))
end
