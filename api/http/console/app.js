// tradecore desk console: plain browser JavaScript over the public API, no build step.
//
// The page holds no privilege of its own: it signs in through POST /v1/session (or takes
// a pasted token), then calls the same routes and /v1/stream as any client with that
// token, so what a user may see and do is what the API lets them. Every refusal is the
// API's problem+json, shown next to the field it names; a lost connection shows a banner
// and reconnects; an expired or refused token returns to the sign-in form.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "tradecore.token";
  const PRICE_SCALE = 10; // price units per yen (aggregates.instruments.PRICE_SCALE)
  const JST_OFFSET_S = 9 * 3600; // charts label time in Tokyo time
  const BOOK_EVERY_MS = 1500;
  const BARS_EVERY_MS = 5000;
  // Halts do not travel on the stream (it carries a caller's orders and fills): the page
  // asks GET /v1/halts this often, so a trader sees a halt within seconds, no reload.
  const HALTS_EVERY_MS = 1500;

  const state = {
    token: null, claims: null, expiresAt: 0,
    accounts: [], // BalanceView rows the caller may see
    instruments: new Map(), // symbol -> InstrumentView
    orders: new Map(), // order_id -> OrderView
    fills: [], fillIds: new Set(),
    socket: null, socketGen: 0, retryMs: 500, online: false,
    timers: [], refreshTimer: null, charts: {},
    halts: { symbols: [], accounts: [] }, // GET /v1/halts: what is halted now
  };

  // ------------------------------------------------------------------ formatting
  const yenFmt = new Intl.NumberFormat("ja-JP");
  const timeFmt = new Intl.DateTimeFormat("ja-JP", {
    timeZone: "Asia/Tokyo", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });

  /** A price in tenths of a yen as yen, with the decimal only where the tick needs it. */
  function price(units) {
    if (units === null || units === undefined) return "–";
    if (units === 0) return "MKT";
    const yen = units / PRICE_SCALE;
    return yen.toLocaleString("ja-JP", {
      minimumFractionDigits: units % PRICE_SCALE ? 1 : 0, maximumFractionDigits: 1 });
  }
  const yen = (amount) => (amount === null || amount === undefined ? "–"
    : (amount < 0 ? "-¥" : "¥") + yenFmt.format(Math.abs(amount)));
  const shares = (n) => yenFmt.format(n);

  /** Read-model times arrive as ISO text (queries) or microseconds (SQLite stream rows). */
  function when(value) {
    if (typeof value === "number") return new Date(value / 1000);
    return new Date(value);
  }
  const jst = (value) => timeFmt.format(when(value));
  const chartTime = (value) => Math.floor(when(value).getTime() / 1000) + JST_OFFSET_S;

  function accountName(id) {
    const found = state.accounts.find((a) => a.account_id === id);
    return found ? found.name : String(id).slice(0, 8);
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }
  const cell = (text, cls) => el("td", cls ? { class: cls, text } : { text });

  // ------------------------------------------------------------------ the API
  class Offline extends Error {}

  /** One API call. Resolves {ok, status, data}; a 401 signs out; no network -> Offline. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      connectionLost("the server cannot be reached");
      throw new Offline(String(err));
    }
    if (!state.online && state.socket && state.socket.readyState === WebSocket.OPEN) connectionBack();
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 200) }; }
    }
    if (response.status === 401 && state.token && path !== "/v1/session") {
      signOut(data && data.detail ? `Signed out: ${data.detail}` : "Signed out");
    }
    if (response.status >= 500 && response.status !== 503) {
      notice(`The server failed (${response.status}); try again.`);
    }
    return { ok: response.ok, status: response.status, data };
  }

  /** A problem+json document's messages, by the field each names. */
  function problemFields(problem) {
    const out = [];
    if (!problem) return [["form", "refused"]];
    if (Array.isArray(problem.errors) && problem.errors.length) {
      for (const e of problem.errors) out.push([e.field || "form", `${e.field}: ${e.rule}`]);
    } else {
      out.push([problem.field || "form", problem.detail || problem.title || "refused"]);
    }
    return out;
  }

  /** Show a problem next to the named fields of ``form``; unnamed ones go to "form". */
  function showProblem(form, problem) {
    clearProblems(form);
    for (const [field, message] of problemFields(problem)) {
      const name = String(field).replace(/^body\./, "");
      let slot = form.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
      if (!slot) slot = form.querySelector('.field-error[data-for="form"]');
      slot.textContent = slot.textContent ? slot.textContent + " " + message : message;
      const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
      if (input) input.classList.add("invalid");
    }
  }
  function clearProblems(form) {
    form.querySelectorAll(".field-error").forEach((s) => { s.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((i) => i.classList.remove("invalid"));
  }

  // ------------------------------------------------------------------ banners
  function connectionLost(why) {
    state.online = false;
    const banner = $("banner");
    banner.textContent = `Connection lost (${why}); reconnecting…`;
    banner.hidden = false;
    $("link").className = "link down";
  }
  function connectionBack() {
    state.online = true;
    $("banner").hidden = true;
    $("link").className = "link up";
  }
  function notice(message) {
    const box = $("notice");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(notice.timer);
    notice.timer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  // ------------------------------------------------------------------ sign-in
  function decodeClaims(token) {
    const part = token.split(".")[1];
    if (!part) throw new Error("not a JWT");
    const text = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    return JSON.parse(text);
  }

  function showSignIn(message) {
    $("desk").hidden = true;
    $("signin").hidden = false;
    const error = $("signin-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("signin-password").value = "";
    $("signin-name").focus();
  }

  function signOut(message) {
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
    state.socketGen += 1; // the open socket's handlers stand down
    if (state.socket) { try { state.socket.close(1000, "signed out"); } catch { /* closed */ } }
    state.socket = null;
    state.token = null;
    state.claims = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("banner").hidden = true;
    showSignIn(message);
  }

  async function useToken(token, fromStorage) {
    let claims;
    try { claims = decodeClaims(token); } catch {
      showSignIn("That is not a bearer token.");
      return;
    }
    if (!claims.exp || claims.exp * 1000 <= Date.now()) {
      if (fromStorage) sessionStorage.removeItem(TOKEN_KEY);
      showSignIn("Your session expired; sign in again.");
      return;
    }
    state.token = token;
    state.claims = claims;
    state.expiresAt = claims.exp * 1000;
    const check = await api("GET", "/v1/accounts").catch(() => null);
    if (!check) return; // offline: the banner says so
    if (!check.ok) {
      state.token = null;
      showSignIn(check.data && check.data.detail ? `Token refused: ${check.data.detail}` : "Token refused");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.accounts = check.data;
    await openDesk();
  }

  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("signin-name").value.trim();
    const password = $("signin-password").value;
    $("signin-submit").disabled = true;
    try {
      const answer = await api("POST", "/v1/session", { name, password });
      $("signin-password").value = "";
      if (!answer.ok) {
        showSignIn((answer.data && answer.data.detail) || `Sign-in refused (${answer.status})`);
        $("signin-name").value = name;
        return;
      }
      await useToken(answer.data.access_token, false);
    } catch (err) {
      if (!(err instanceof Offline)) throw err;
      showSignIn("The server cannot be reached.");
    } finally {
      $("signin-submit").disabled = false;
    }
  });

  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim().replace(/^bearer\s+/i, "");
    $("token-input").value = "";
    await useToken(token, false);
  });

  $("signout").addEventListener("click", () => signOut("Signed out."));

  // ------------------------------------------------------------------ the desk
  const role = () => state.claims.role;
  const canTrade = () => role() === "trader" || role() === "admin";
  const canHalt = () => role() === "risk" || role() === "admin";

  async function openDesk() {
    $("signin").hidden = true;
    $("desk").hidden = false;
    $("notice").hidden = true;
    const scope = state.claims.accounts === "*" ? "every account" : `${state.accounts.length} account(s)`;
    $("who").textContent = `${state.claims.sub} · ${role()} · ${scope}`;
    $("ticket-panel").hidden = !canTrade();
    $("risk-panel").hidden = !canHalt();
    $("close-row").hidden = role() !== "admin" && role() !== "risk";
    state.online = true; // the stream's first open is not a reconnection
    state.orders.clear();
    state.fills = [];
    state.fillIds.clear();
    fillAccountPickers();
    await loadInstruments();
    ensureCharts();
    await refreshAll();
    connectStream();
    state.timers.push(setInterval(tickExpiry, 1000));
    state.timers.push(setInterval(() => refreshBook().catch(quiet), BOOK_EVERY_MS));
    state.timers.push(setInterval(() => refreshBars().catch(quiet), BARS_EVERY_MS));
    state.timers.push(setInterval(() => refreshHalts().catch(quiet), HALTS_EVERY_MS));
    tickExpiry();
  }

  function quiet(err) { if (!(err instanceof Offline)) console.error(err); }

  function tickExpiry() {
    const left = Math.round((state.expiresAt - Date.now()) / 1000);
    if (left <= 0) { signOut("Your session expired; sign in again."); return; }
    const m = Math.floor(left / 60), s = left % 60;
    $("expiry").textContent = `session ${m}:${String(s).padStart(2, "0")} left`;
  }

  function fillAccountPickers() {
    const own = state.accounts;
    const option = (a) => el("option", { value: a.account_id, text: a.name });
    $("t-account").replaceChildren(...own.map(option));
    $("r-account").replaceChildren(...own.map(option));
    $("pnl-account").replaceChildren(...own.map(option));
    $("blotter-account").replaceChildren(
      el("option", { value: "", text: "all accounts" }), ...own.map(option));
  }

  async function loadInstruments() {
    const answer = await api("GET", "/v1/instruments");
    if (!answer.ok) return;
    state.instruments = new Map(answer.data.map((i) => [i.symbol, i]));
    const option = (i) => el("option", { value: i.symbol, text: `${i.symbol} ${i.name}` });
    const chosen = $("m-symbol").value;
    $("t-symbol").replaceChildren(...answer.data.map(option));
    $("m-symbol").replaceChildren(...answer.data.map(option));
    $("r-symbol").replaceChildren(...answer.data.map((i) => el("option", { value: i.symbol, text: i.symbol })));
    if (chosen && state.instruments.has(chosen)) {
      $("t-symbol").value = chosen;
      $("m-symbol").value = chosen;
    }
    showInstrument();
  }

  /** The symbol the book, the price chart and the ticket's facts show. */
  function currentSymbol() { return $("m-symbol").value || [...state.instruments.keys()][0]; }

  function tickAt(instrument, units) {
    for (const band of instrument.ticks) if (units <= band.upper) return band.tick;
    return instrument.ticks.length ? instrument.ticks[instrument.ticks.length - 1].tick : 1;
  }

  function showInstrument() {
    const instrument = state.instruments.get(currentSymbol());
    const facts = $("instrument");
    if (!instrument) { facts.replaceChildren(); return; }
    const reference = instrument.last_price || instrument.base_price;
    const tick = tickAt(instrument, reference);
    const rows = [
      ["Lot", `${shares(instrument.lot_size)} shares`],
      ["Tick here", `${price(tick)} yen (${instrument.tick_table})`],
      ["Base (prev. close)", `${price(instrument.base_price)} yen`],
      ["Lower limit", `${price(instrument.lower_limit)} yen`],
      ["Upper limit", `${price(instrument.upper_limit)} yen`],
      ["Last", instrument.last_price ? `${price(instrument.last_price)} yen` : "no trade yet"],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, "data-fact": k })]));
    const input = $("t-price");
    input.setAttribute("step", String(tick / PRICE_SCALE));
    input.setAttribute("min", String(instrument.lower_limit / PRICE_SCALE));
    input.setAttribute("max", String(instrument.upper_limit / PRICE_SCALE));
    input.placeholder = `${price(instrument.lower_limit)} – ${price(instrument.upper_limit)}`;
    $("book-symbol").textContent = instrument.symbol;
  }

  // ------------------------------------------------------------------ ticket
  /** Yen text to integer tenths of a yen, or null when it is not such a number. */
  function priceUnits(text) {
    const match = /^\s*(\d{1,12})(?:\.(\d))?\s*$/.exec(text.replace(/,/g, ""));
    if (!match) return null;
    return Number(match[1]) * PRICE_SCALE + Number(match[2] || 0);
  }

  $("t-type").addEventListener("change", () => {
    const market = $("t-type").value === "market";
    $("t-price").disabled = market;
    if (market) $("t-price").value = "";
  });
  /** The ticket's symbol and the market panels' symbol move together. */
  function symbolChosen(symbol) {
    $("t-symbol").value = symbol;
    $("m-symbol").value = symbol;
    showInstrument();
    showTicketHalts();
    refreshBook().catch(quiet);
    refreshBars().catch(quiet);
  }
  $("t-symbol").addEventListener("change", () => symbolChosen($("t-symbol").value));
  $("m-symbol").addEventListener("change", () => symbolChosen($("m-symbol").value));
  $("t-account").addEventListener("change", () => showTicketHalts());

  /** The ticket's badge: the chosen symbol or account is halted, so an order would be
   *  refused. Only a warning: the ticket still submits and the API's refusal shows. */
  function showTicketHalts() {
    const badge = $("t-halted");
    const symbol = state.halts.symbols.find((h) => h.symbol === $("t-symbol").value);
    const account = state.halts.accounts.find((h) => h.account_id === $("t-account").value);
    const said = [];
    if (symbol) said.push(`${symbol.symbol} (${symbol.reason})`);
    if (account) said.push(`account ${account.name} (${account.reason})`);
    badge.textContent = said.length ? `HALTED: ${said.join("; ")}` : "";
    badge.hidden = !said.length;
  }

  $("ticket").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = $("ticket");
    clearProblems(form);
    const quantityText = $("t-quantity").value.trim().replace(/,/g, "");
    const market = $("t-type").value === "market";
    const local = [];
    if (!/^\d{1,12}$/.test(quantityText)) local.push({ field: "quantity", rule: "a whole number of shares" });
    let units = 0;
    if (!market) {
      units = priceUnits($("t-price").value);
      if (units === null) local.push({ field: "price", rule: "yen, at most one decimal (0.1 yen)" });
    }
    if (local.length) { showProblem(form, { errors: local }); return; }
    const order = {
      account_id: $("t-account").value,
      client_order_id: `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      symbol: $("t-symbol").value,
      side: $("t-side").value,
      order_type: $("t-type").value,
      tif: $("t-tif").value,
      quantity: Number(quantityText),
      price: units,
    };
    $("t-submit").disabled = true;
    try {
      const answer = await api("POST", "/v1/orders", order);
      if (!answer.ok) {
        showProblem(form, answer.data);
        $("t-result").textContent = "";
        return;
      }
      $("t-result").textContent =
        `${order.side} ${shares(order.quantity)} ${order.symbol} @ ${price(order.price)}: ${answer.data.status}`;
      await refreshOrders(answer.data.position);
    } catch (err) { quiet(err); } finally { $("t-submit").disabled = false; }
  });

  // ------------------------------------------------------------------ blotter
  /** Keep the newest state of an order: a query answered before a stream message can
   *  arrive after it, and must not put the older state back. */
  function keepOrder(order) {
    const known = state.orders.get(order.order_id);
    if (known && known.version > order.version) return false;
    state.orders.set(order.order_id, order);
    return true;
  }

  function upsertOrder(order) {
    if (keepOrder(order)) renderOrders(order.order_id);
  }

  function renderOrders(flashId) {
    const only = $("blotter-account").value;
    const rows = [...state.orders.values()]
      .filter((o) => !only || o.account_id === only)
      .sort((a, b) => b.seq - a.seq)
      .slice(0, 100);
    $("orders").tBodies[0].replaceChildren(...rows.map((o) => orderRow(o, o.order_id === flashId)));
  }

  const OPEN = new Set(["placed", "accepted", "working", "partially_filled"]);

  function orderRow(o, flash) {
    const actions = el("td");
    if (canTrade() && OPEN.has(o.status)) {
      actions.append(
        el("button", { type: "button", class: "amend-open", text: "Amend", onclick: () => openAmend(o, actions) }),
        " ",
        el("button", { type: "button", class: "cancel", text: "Cancel", onclick: () => cancelOrder(o, actions) }));
    }
    const row = el("tr", { "data-order": o.order_id, class: flash ? "flash" : "" },
      cell(jst(o.created_at)), cell(accountName(o.account_id)), cell(o.symbol),
      cell(o.side, o.side), cell(o.order_type), cell(shares(o.quantity)), cell(price(o.price)),
      cell(shares(o.filled_quantity)), el("td", { class: `status status-${o.status}`, text: o.status, title: o.reason || "" }),
      actions);
    return row;
  }

  function openAmend(o, where) {
    const qty = el("input", { value: String(o.quantity), "aria-label": "new quantity", name: "quantity" });
    const px = el("input", { value: String(o.price / PRICE_SCALE), "aria-label": "new price (yen)", name: "price" });
    const message = el("span", { class: "field-error", "data-for": "form" });
    const save = el("button", { type: "button", text: "Save" });
    const box = el("span", { class: "amend" }, qty, px, save, message);
    save.addEventListener("click", async () => {
      const units = priceUnits(px.value);
      if (!/^\d{1,12}$/.test(qty.value.trim()) || units === null) {
        message.textContent = "quantity: whole shares; price: yen, at most one decimal";
        return;
      }
      const answer = await api("PATCH", `/v1/orders/${o.order_id}`, { quantity: Number(qty.value.trim()), price: units }).catch(quiet);
      if (!answer) return;
      if (!answer.ok) { message.textContent = problemFields(answer.data).map((p) => p[1]).join(" "); return; }
      await refreshOrders(answer.data.position);
    });
    where.replaceChildren(box);
    qty.focus();
  }

  async function cancelOrder(o, where) {
    const answer = await api("DELETE", `/v1/orders/${o.order_id}`).catch(quiet);
    if (!answer) return;
    if (!answer.ok) {
      where.replaceChildren(el("span", { class: "field-error", text: answer.data ? answer.data.detail : "refused" }));
      return;
    }
    await refreshOrders(answer.data.position);
  }

  function addFill(fill, fresh) {
    if (state.fillIds.has(fill.execution_id + fill.order_id)) return;
    state.fillIds.add(fill.execution_id + fill.order_id);
    state.fills.push(fill);
    state.fills.sort((a, b) => b.seq - a.seq);
    if (state.fills.length > 200) state.fills.length = 200;
    renderFills(fresh ? fill : null);
  }

  function renderFills(fresh) {
    const only = $("blotter-account").value;
    const rows = state.fills.filter((f) => !only || f.account_id === only).slice(0, 100).map((f) =>
      el("tr", { "data-fill": f.execution_id, class: f === fresh ? "flash" : "" },
        cell(jst(f.ts)), cell(accountName(f.account_id)), cell(f.symbol), cell(f.side, f.side),
        cell(shares(f.quantity)), cell(price(f.price)), cell(yen(f.fee)), cell(f.liquidity)));
    $("fills").tBodies[0].replaceChildren(...rows);
  }

  $("blotter-account").addEventListener("change", () => { renderOrders(); renderFills(); });

  // ------------------------------------------------------------------ queries
  async function refreshOrders(position) {
    const wait = position ? `&min_position=${position}` : "";
    const [orders, fills] = await Promise.all([
      api("GET", `/v1/orders?limit=100${wait}`), api("GET", `/v1/fills?limit=100${wait}`)]);
    if (orders.ok) {
      for (const o of orders.data.items) keepOrder(o);
      renderOrders();
    }
    if (fills.ok) for (const f of fills.data.items) addFill(f, false);
  }

  async function refreshAccounts() {
    const answer = await api("GET", "/v1/accounts");
    if (!answer.ok) return;
    state.accounts = answer.data;
    $("balances").tBodies[0].replaceChildren(...answer.data.map((a) =>
      el("tr", { "data-account": a.name },
        cell(a.name), cell(yen(a.cash)), cell(yen(a.reserved)), cell(yen(a.available)),
        cell(a.halted ? "HALTED" : "", a.halted ? "halted" : ""))));
    const positions = await Promise.all(answer.data.map((a) =>
      api("GET", `/v1/accounts/${a.account_id}/positions`)));
    const rows = [];
    positions.forEach((p, i) => {
      if (!p.ok) return;
      for (const row of p.data) {
        if (!row.quantity && !row.realised_pnl) continue;
        const average = row.quantity ? Math.round((row.cost / row.quantity) * 10) / 10 : null;
        rows.push(el("tr", { "data-position": `${answer.data[i].name}/${row.symbol}` },
          cell(answer.data[i].name), cell(row.symbol), cell(shares(row.quantity)),
          cell(average === null ? "–" : average.toLocaleString("ja-JP")),
          cell(yen(row.realised_pnl), row.realised_pnl >= 0 ? "pos" : "neg")));
      }
    });
    $("positions").tBodies[0].replaceChildren(...rows);
  }

  async function refreshPnl() {
    const account = $("pnl-account").value;
    if (!account) return;
    const answer = await api("GET", `/v1/accounts/${account}/pnl?bucket=${$("pnl-bucket").value}`);
    if (!answer.ok) return;
    const points = answer.data;
    const last = points[points.length - 1] || { realised: 0, unrealised: 0, fees: 0, net: 0 };
    const rows = [["Realised", last.realised], ["Unrealised", last.unrealised], ["Fees", last.fees], ["Net", last.net]];
    $("pnl-summary").replaceChildren(...rows.flatMap(([k, v]) =>
      [el("dt", { text: k }), el("dd", { text: yen(v), class: v >= 0 ? "pos" : "neg", "data-pnl": k.toLowerCase() })]));
    const series = state.charts.pnl;
    if (series) {
      const byTime = new Map(points.map((p) => [chartTime(p.bucket), p]));
      const times = [...byTime.keys()].sort((a, b) => a - b);
      series.net.setData(times.map((t) => ({ time: t, value: byTime.get(t).net })));
      series.unrealised.setData(times.map((t) => ({ time: t, value: byTime.get(t).unrealised })));
    }
  }

  async function refreshBook() {
    const symbol = currentSymbol();
    if (!symbol) return;
    const answer = await api("GET", `/v1/market/${symbol}/book?depth=10`);
    if (!answer.ok) return;
    const book = answer.data;
    const rows = [];
    for (const ask of [...book.asks].reverse()) {
      rows.push(el("tr", { class: "ask" }, cell(""), cell(""), cell(price(ask.price)), cell(shares(ask.quantity)), cell(String(ask.orders))));
    }
    for (const bid of book.bids) {
      rows.push(el("tr", { class: "bid" }, cell(String(bid.orders)), cell(shares(bid.quantity)), cell(price(bid.price)), cell(""), cell("")));
    }
    $("book").tBodies[0].replaceChildren(...rows);
    $("book-last").textContent = book.last_price ? `last ${price(book.last_price)} yen` : "no trade yet";
    const instrument = state.instruments.get(symbol);
    if (instrument && instrument.last_price !== book.last_price) {
      instrument.last_price = book.last_price;
      showInstrument();
    }
  }

  async function refreshBars() {
    const symbol = currentSymbol();
    if (!symbol || !state.charts.price) return;
    const answer = await api("GET", `/v1/market/${symbol}/bars?bucket=${$("bars-bucket").value}`);
    if (!answer.ok) return;
    const byTime = new Map(answer.data.map((b) => [chartTime(b.bucket), b]));
    const times = [...byTime.keys()].sort((a, b) => a - b);
    state.charts.price.setData(times.map((t) => {
      const b = byTime.get(t);
      return { time: t, open: b.open / PRICE_SCALE, high: b.high / PRICE_SCALE, low: b.low / PRICE_SCALE, close: b.close / PRICE_SCALE };
    }));
  }

  /** What is halted now (every symbol halt; account halts of the caller's accounts). */
  async function refreshHalts(position) {
    const wait = position ? `?min_position=${position}` : "";
    const answer = await api("GET", `/v1/halts${wait}`);
    if (!answer.ok) return;
    state.halts = answer.data;
    showTicketHalts();
    renderHalts();
  }

  /** The risk panel's list of current halts, a resume button each. */
  function renderHalts() {
    if (!canHalt()) return;
    const resume = (path, what) => el("td", {}, el("button", {
      type: "button", class: "resume", text: "Resume",
      onclick: () => riskAction(path, undefined, `${what} resume`) }));
    const rows = [
      ...state.halts.symbols.map((h) => el("tr", { "data-halt": `symbol/${h.symbol}` },
        cell(h.symbol, "halted"), cell(h.reason), cell(h.principal), cell(jst(h.halted_at)),
        resume(`/v1/symbols/${h.symbol}/resume`, h.symbol))),
      ...state.halts.accounts.map((h) => el("tr", { "data-halt": `account/${h.name}` },
        cell(`account ${h.name}`, "halted"), cell(h.reason), cell(h.principal),
        cell(jst(h.halted_at)), resume(`/v1/accounts/${h.account_id}/resume`, h.name))),
    ];
    $("halts").tBodies[0].replaceChildren(...rows);
    $("halts-count").textContent = rows.length ? String(rows.length) : "none";
  }

  async function refreshAll() {
    await Promise.all([refreshOrders(), refreshAccounts(), refreshBook(), refreshBars(),
      refreshHalts()]);
    await refreshPnl();
  }

  /** Many stream messages in a burst: one refresh of balances, positions and PnL. */
  function refreshSoon() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => {
      Promise.all([refreshAccounts(), refreshPnl(), refreshBook(), refreshBars()]).catch(quiet);
    }, 150);
  }

  $("pnl-account").addEventListener("change", () => refreshPnl().catch(quiet));
  $("pnl-bucket").addEventListener("change", () => refreshPnl().catch(quiet));
  $("bars-bucket").addEventListener("change", () => refreshBars().catch(quiet));

  // ------------------------------------------------------------------ charts
  function ensureCharts() {
    if (state.charts.price || !window.LightweightCharts) return;
    const LC = window.LightweightCharts;
    const look = {
      autoSize: true,
      layout: { background: { color: "#171c22" }, textColor: "#8793a2", attributionLogo: true },
      grid: { vertLines: { color: "#1e252d" }, horzLines: { color: "#1e252d" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    };
    const priceChart = LC.createChart($("price-chart"), look);
    state.charts.price = priceChart.addSeries(LC.CandlestickSeries, {
      upColor: "#2fae83", downColor: "#e0535f", borderVisible: false,
      wickUpColor: "#2fae83", wickDownColor: "#e0535f",
      priceFormat: { type: "price", precision: 1, minMove: 0.1 },
    });
    const pnlChart = LC.createChart($("pnl-chart"), look);
    state.charts.pnl = {
      net: pnlChart.addSeries(LC.LineSeries, { color: "#4c8dd6", lineWidth: 2, title: "net",
        priceFormat: { type: "price", precision: 0, minMove: 1 } }),
      unrealised: pnlChart.addSeries(LC.LineSeries, { color: "#d9a441", lineWidth: 1, title: "unrealised",
        priceFormat: { type: "price", precision: 0, minMove: 1 } }),
    };
  }

  // ------------------------------------------------------------------ risk
  async function riskAction(path, body, what) {
    const form = $("risk-form");
    clearProblems(form);
    const answer = await api("POST", path, body).catch(quiet);
    if (!answer) return;
    if (!answer.ok) { showProblem(form, answer.data); return; }
    $("risk-log").prepend(el("li", { text: `${timeFmt.format(new Date())} ${what}: ${answer.data.status}` }));
    refreshHalts(answer.data.position).catch(quiet); // read-your-writes: the list shows it
    refreshSoon();
  }
  const reason = () => ({ reason: $("r-reason").value });
  $("r-halt-symbol").addEventListener("click", () =>
    riskAction(`/v1/symbols/${$("r-symbol").value}/halt`, reason(), `${$("r-symbol").value} halt`));
  $("r-resume-symbol").addEventListener("click", () =>
    riskAction(`/v1/symbols/${$("r-symbol").value}/resume`, undefined, `${$("r-symbol").value} resume`));
  $("r-halt-account").addEventListener("click", () =>
    riskAction(`/v1/accounts/${$("r-account").value}/halt`, reason(), `${accountName($("r-account").value)} halt`));
  $("r-resume-account").addEventListener("click", () =>
    riskAction(`/v1/accounts/${$("r-account").value}/resume`, undefined, `${accountName($("r-account").value)} resume`));
  $("r-close-session").addEventListener("click", () =>
    riskAction("/v1/session/close", { session_date: $("r-session-date").value.trim() }, "session close"));

  // ------------------------------------------------------------------ stream
  function connectStream() {
    const generation = ++state.socketGen;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/v1/stream?token=${encodeURIComponent(state.token)}`);
    state.socket = socket;
    socket.addEventListener("open", () => {
      if (generation !== state.socketGen) return;
      const wasDown = !state.online;
      state.retryMs = 500;
      connectionBack();
      if (wasDown) refreshAll().catch(quiet); // catch up on what happened while away
    });
    socket.addEventListener("message", (event) => {
      if (generation !== state.socketGen) return;
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.kind === "order") upsertOrder(message.data);
      else if (message.kind === "fill") addFill(message.data, true);
      refreshSoon();
    });
    socket.addEventListener("close", (event) => {
      if (generation !== state.socketGen || !state.token) return;
      if (event.code === 4401) { signOut(`Signed out: ${event.reason || "token refused"}`); return; }
      const wait = event.code === 4429 ? 10000 : state.retryMs;
      connectionLost(event.reason || `stream closed (${event.code})`);
      state.retryMs = Math.min(state.retryMs * 2, 5000);
      setTimeout(() => { if (generation === state.socketGen && state.token) connectStream(); }, wait);
    });
  }

  // ------------------------------------------------------------------ start
  window.addEventListener("error", (event) => {
    notice(`Something went wrong in the page: ${event.message}`);
  });
  window.addEventListener("unhandledrejection", (event) => {
    if (event.reason instanceof Offline) { event.preventDefault(); return; }
    notice(`Something went wrong in the page: ${event.reason && event.reason.message ? event.reason.message : event.reason}`);
  });

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) useToken(saved, true); else showSignIn("");
})();
