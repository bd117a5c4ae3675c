# ruff: noqa: E402  (imports follow the sys.path fix below)
"""A legitimate client's reads while others flood the API (issue 10, item 3).

What runs, all on 127.0.0.1 and bounded in time (about ``4 x --phase-s`` seconds plus
start-up):

1. ``tradecore serve`` as a child process on a temporary folder (the code of
   ``--code``, default this checkout, so the same script measures an older commit too);
2. seeding: an account for the legitimate reader and one for a flooding principal;
3. four phases of ``--phase-s`` seconds each. In every phase the legitimate client
   (its own connection, from 127.0.0.1) reads ``GET /v1/accounts/{id}/balance`` at
   ``--rate`` per second, open loop: each read has a scheduled time and its latency runs
   from that time, so waiting behind the flood counts. Alongside it:

   * ``baseline``: nothing else;
   * ``no_token``: ``--connections`` connections (from 127.0.0.2) send
     ``POST /v1/orders`` with a JSON body and no ``Authorization`` as fast as the
     server answers;
   * ``forged_token``: the same from 127.0.0.3 with a forged bearer token;
   * ``one_principal``: the same number of connections (from 127.0.0.4) read the
     balance with a *valid* token of another principal (its rate limit answers 429).

   The flood runs in ``--processes`` child processes (raw asyncio sockets, keep-alive).

Per phase: the legitimate reads' p50/p95/p99/max (ms, from sending each read to its
answer), their p95/max from the *scheduled* time (``scheduled_*``: a read that had to
wait for the previous one counts that wait) and errors; the flood's requests per second
by status; the server's CPU seconds. JSON on stdout.

    python benchmarks/auth_flood.py                       # this checkout, ~45 s
    python benchmarks/auth_flood.py --code /tmp/before    # a worktree of an older commit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

from api.security import KeyRing, Role, issue_token

LEGIT, FLOOD_NO_TOKEN, FLOOD_FORGED, FLOOD_PRINCIPAL = (
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
)
ISSUER, AUDIENCE = "tradecore", "tradecore-api"
ORDER_BODY = json.dumps(
    {
        "account_id": "00000000-0000-0000-0000-000000000000",
        "client_order_id": "flood",
        "symbol": "7203",
        "side": "buy",
        "quantity": 100,
        "price": 74900,
    }
).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(code: Path) -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip() or str(code)


# -- a minimal HTTP/1.1 keep-alive client --------------------------------------------------
def request(method: str, path: str, token: str | None, body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes, bool]:
    """Send one request, read its response: (status, body, connection kept open)."""
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    body = await reader.readexactly(length) if length else b""
    return status, body, keep


async def open_from(address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


# -- the flood (child processes) -------------------------------------------------------------
async def _flood(
    port: int, address: str, raw: bytes, connections: int, until: float
) -> Counter[str]:
    counts: Counter[str] = Counter()

    async def one() -> None:
        writer = None
        while time.time() < until:
            try:
                if writer is None:
                    reader, writer = await open_from(address, port)
                status, _, keep = await asyncio.wait_for(
                    exchange(reader, writer, raw), max(0.1, until - time.time())
                )
                counts[str(status)] += 1
                if not keep:
                    writer.close()
                    writer = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                if time.time() >= until:
                    break  # the phase ended while this request waited: not an error
                counts["transport error"] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return counts


def flood_process(
    port: int, address: str, raw: bytes, connections: int, until: float, results: Any
) -> None:
    results.put(dict(asyncio.run(_flood(port, address, raw, connections, until))))


# -- the legitimate reader -------------------------------------------------------------------
async def legit_reads(
    port: int, path: str, token: str, rate: float, seconds: float
) -> dict[str, Any]:
    reader, writer = await open_from(LEGIT, port)
    raw = request("GET", path, token)
    latencies: list[float] = []  # from the scheduled time: queueing counts
    service: list[float] = []  # from the moment the request was sent
    errors: Counter[str] = Counter()
    interval = 1 / rate
    start = time.perf_counter()
    n = 0
    while True:
        scheduled = start + n * interval
        if scheduled - start >= seconds:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.perf_counter()
        try:
            status, _, keep = await exchange(reader, writer, raw)
            if status != 200:
                errors[str(status)] += 1
            if not keep:
                writer.close()
                reader, writer = await open_from(LEGIT, port)
        except (OSError, asyncio.IncompleteReadError) as err:
            errors[type(err).__name__] += 1
            reader, writer = await open_from(LEGIT, port)
        done = time.perf_counter()
        latencies.append((done - scheduled) * 1000)
        service.append((done - sent) * 1000)
        n += 1
    writer.close()
    latencies.sort()
    service.sort()

    def pct(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 2)

    return {
        "reads": len(latencies),
        "p50_ms": pct(service, 0.50),
        "p95_ms": pct(service, 0.95),
        "p99_ms": pct(service, 0.99),
        "max_ms": round(service[-1], 2),
        "scheduled_p95_ms": pct(latencies, 0.95),
        "scheduled_max_ms": round(latencies[-1], 2),
        "errors": dict(errors),
    }


# -- the server ------------------------------------------------------------------------------
class Server:
    def __init__(self, code: Path, folder: Path, port: int, extra_env: dict[str, str]) -> None:
        self.folder, self.port = folder, port
        env = {
            **os.environ,
            **extra_env,
            "PYTHONPATH": str(code),
            "TRADECORE_PERSISTENCE": "sqlite",
            "TRADECORE_SQLITE_PATH": str(folder / "events.sqlite"),
            "TRADECORE_READMODEL_SQLITE_PATH": str(folder / "readmodels.sqlite"),
            "TRADECORE_JWT_KEYS_PATH": str(folder / "jwt-keys.json"),
        }
        starter = "import sys; from api.cli import main; sys.argv[0] = 'tradecore'; main()"
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", starter, "serve", "--port", str(port), "--log-level", "error"],
            cwd=code,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "server.log").read_text()[-3000:])
            try:
                reader, writer = await open_from(LEGIT, self.port)
                status, _, _ = await exchange(reader, writer, request("GET", "/readyz", None))
                writer.close()
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("tradecore serve did not get ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def post(port: int, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await open_from(LEGIT, port)
    status, answer, _ = await exchange(
        reader, writer, request("POST", path, token, json.dumps(body).encode())
    )
    writer.close()
    if status not in (200, 201, 202):
        raise RuntimeError(f"{path}: {status} {answer[:300]!r}")
    return json.loads(answer)  # type: ignore[no-any-return]


# -- main ------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    port = free_port()
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    server = Server(args.code, folder, port, extra_env)
    out: dict[str, Any] = {
        "code": describe(args.code),
        "cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "phase_s": args.phase_s,
        "legit_rate_per_s": args.rate,
        "flood_connections": args.connections,
        "server_env": extra_env,
        "note": "server, flood and reader share the same cores",
    }
    try:
        await server.ready()
        ring = KeyRing.load_or_create(folder / "jwt-keys.json")

        def token(subject: str, role: Role, accounts: list[Any] | None) -> str:
            return issue_token(
                ring,
                subject=subject,
                role=role,
                accounts=accounts,
                ttl_s=3600,
                issuer=ISSUER,
                audience=AUDIENCE,
            )

        admin = token("bench-admin", Role.admin, None)
        accounts = {}
        for name in ("reader", "flooder"):
            opened = await post(port, "/v1/accounts", admin, {"name": name, "owner": name})
            accounts[name] = opened["account_id"]
            await post(
                port, f"/v1/accounts/{accounts[name]}/deposits", admin, {"amount": 10_000_000}
            )
        reader = token("reader", Role.viewer, [UUID(accounts["reader"])])
        flooder = token("flooder", Role.viewer, [UUID(accounts["flooder"])])
        forged = reader[:-6] + ("AAAAAA" if not reader.endswith("AAAAAA") else "BBBBBB")
        legit_path = f"/v1/accounts/{accounts['reader']}/balance"
        await legit_reads(port, legit_path, reader, args.rate, 2)  # warm-up

        phases: dict[str, tuple[str, bytes] | None] = {
            "baseline": None,
            "no_token": (FLOOD_NO_TOKEN, request("POST", "/v1/orders", None, ORDER_BODY)),
            "forged_token": (FLOOD_FORGED, request("POST", "/v1/orders", forged, ORDER_BODY)),
            "one_principal": (
                FLOOD_PRINCIPAL,
                request("GET", f"/v1/accounts/{accounts['flooder']}/balance", flooder),
            ),
        }
        results: dict[str, Any] = {}
        context = multiprocessing.get_context("spawn")
        for phase, flood in phases.items():
            if args.phases and phase not in args.phases:
                continue
            cpu = cpu_seconds(server.process.pid)
            children, queue = [], context.Queue()
            if flood is not None:
                until = time.time() + args.phase_s + 1
                per = max(1, args.connections // args.processes)
                children = [
                    context.Process(
                        target=flood_process, args=(port, flood[0], flood[1], per, until, queue)
                    )
                    for _ in range(args.processes)
                ]
                for child in children:
                    child.start()
                await asyncio.sleep(1)  # the flood reaches full speed
            legit = await legit_reads(port, legit_path, reader, args.rate, args.phase_s)
            entry: dict[str, Any] = {"legit": legit}
            if children:
                counts: Counter[str] = Counter()
                for _ in children:
                    counts.update(queue.get(timeout=60))
                for child in children:
                    child.join(30)
                total = sum(counts.values())
                entry["flood"] = {
                    "requests_per_s": round(total / (args.phase_s + 1)),
                    "by_status": dict(counts),
                }
            entry["server_cpu_s"] = round(cpu_seconds(server.process.pid) - cpu, 2)
            results[phase] = entry
            await asyncio.sleep(1)
        out["phases"] = results
        out["legit_p95_ms"] = {phase: r["legit"]["p95_ms"] for phase, r in results.items()}
    finally:
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--code",
        type=Path,
        default=_HERE.parent,
        help="Project checkout whose `tradecore serve` is measured.",
    )
    parser.add_argument("--phase-s", type=float, default=8.0, help="Seconds per phase.")
    parser.add_argument("--rate", type=float, default=50.0, help="Legitimate reads per second.")
    parser.add_argument(
        "--connections", type=int, default=100, help="Flood connections (all phases)."
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="Child processes generating the flood."
    )
    parser.add_argument(
        "--phases",
        nargs="*",
        default=[],
        help="Only these phases (baseline no_token forged_token one_principal).",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Extra environment for the server, e.g. "
        "TRADECORE_MAX_INFLIGHT_PER_PRINCIPAL=4 (repeat).",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
