"""``tradecore demo``: a seeded trading session on real TOPIX names, then every invariant.

Two market makers (short selling allowed) quote around each stock's last close;
four traders buy, sell, amend and cancel at realistic prices with a mix of time in
force. The session closes (DAY orders expire), then the demo prints positions, cash,
fees, realised PnL and event counts, and checks every invariant of the write model.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from aggregates.account import Account
from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.errors import DomainError
from aggregates.instruments import PRICE_SCALE, Instrument, Universe, round_to_tick
from aggregates.invariants import check_invariants
from aggregates.market import today_in_tokyo
from aggregates.order import Order
from api.wiring import load_instruments, stepped_app
from infra.settings import Settings, get_settings

# at least 132 columns, more on a wider terminal: company names are printed whole
console = Console(width=max(132, shutil.get_terminal_size((132, 24)).columns))

CORE = ["7203", "6758", "9984", "8306", "6861", "9432", "4063", "8035", "6501", "7974",
        "4502", "9983", "8316", "8058", "6098", "6367", "7267", "4519", "6954", "9433"]


def pick_symbols(universe: Universe, count: int) -> list[Instrument]:
    """Large, liquid names first (the TOPIX Core30 when the real universe is loaded)."""
    chosen = [universe.get(s) for s in CORE if s in universe]
    core30 = [i for i in universe.instruments if i.scale_category == "TOPIX Core30"]
    for inst in core30 + list(universe.instruments):
        if inst not in chosen:
            chosen.append(inst)
    return chosen[:count]


def demo(
    orders: int = typer.Option(600, min=1, help="Orders the traders send."),
    symbols: int = typer.Option(8, min=1, help="How many symbols to trade."),
    seed: int = typer.Option(7, help="Random seed: the same seed gives the same session."),
    engine: str = typer.Option("", help="Matching engine: reference or kernel "
                                        "(default: TRADECORE_MATCHING_ENGINE)."),
    store: Path | None = typer.Option(
        None, help="SQLite event store file to trade in, kept afterwards (default: a "
                   "temporary file, deleted at the end unless --keep)."),
    keep: bool = typer.Option(False, "--keep",
                              help="Keep the temporary store and print where it is."),
) -> None:
    """Run a seeded trading session on real TOPIX names and check every invariant.

    Two market makers quote each stock; four traders buy, sell, amend and cancel; the
    session closes (DAY orders expire); then positions, cash, fees, realised PnL, event
    counts and the invariants. The events go to a temporary SQLite file that is deleted
    at the end (about 2.6 MB a run) unless you pass --keep or --store FILE.
    """
    settings = get_settings()
    scratch = None if store else Path(tempfile.mkdtemp(prefix="tradecore-demo-"))
    path = store or (scratch or Path()) / "events.sqlite"
    updates: dict[str, object] = {"sqlite_path": path}
    if engine:
        updates["matching_engine"] = engine
    settings = settings.model_copy(update=updates)
    try:
        failed = _demo(settings, path, orders, symbols, seed)
    finally:
        _tidy(settings, path, scratch, keep)
    if failed:
        raise typer.Exit(1)


def _tidy(settings: Settings, path: Path, scratch: Path | None, keep: bool) -> None:
    """Delete the temporary store unless asked to keep it; say where it is either way."""
    if settings.persistence != "sqlite":
        return
    if scratch is None:
        console.print(f"events kept in {path}")
    elif keep:
        console.print(f"events kept in {path} (delete {scratch} when done)")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
        console.print(f"temporary store {scratch} deleted (--keep keeps it)")


def _demo(settings: Settings, path: Path, orders: int, symbols: int, seed: int) -> bool:
    """The session and its report; True when an invariant failed."""
    universe = load_instruments(settings)
    app = stepped_app(settings, universe=universe)
    try:
        where = path if settings.persistence == "sqlite" else settings.postgres_db
        console.print(f"[bold]tradecore demo[/] — {len(universe)} instruments from "
                      f"{universe.source or 'bundled file'}; "
                      f"engine={settings.matching_engine}; "
                      f"store={settings.persistence}:{where}")
        stocks = pick_symbols(universe, symbols)
        started = time.perf_counter()
        stats = run_session(app, stocks, orders, random.Random(seed))
        elapsed = time.perf_counter() - started
        # today's session by the app's clock: the only kind the market lets close
        app.close_session(today_in_tokyo(app.clock.now()).isoformat(), Meta.command("ops"))
        report(app, stats, elapsed)
        return not _invariants(app)
    finally:
        app.close()


def _invariants(app: TradingApplication) -> bool:
    """Print every invariant check; True when all hold."""
    checks = check_invariants(app)
    table = Table(title="invariants")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAILED[/]", check.detail)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    console.print(f"invariants: {len(checks) - len(failed)}/{len(checks)} hold")
    return not failed


def run_session(app: TradingApplication, stocks: list[Instrument], count: int,
                rng: random.Random) -> Counter[str]:
    from rich.progress import Progress

    stats: Counter[str] = Counter()
    makers = [app.open_account(f"maker-{i}", owner="desk", meta=Meta.command("ops"),
                               allow_short=True) for i in range(2)]
    traders = [app.open_account(f"trader-{i}", owner=f"trader-{i}", meta=Meta.command("ops"))
               for i in range(4)]
    for account in makers:
        app.deposit(account, 5_000_000_000, Meta.command("ops"))
    for account in traders:
        app.deposit(account, 200_000_000, Meta.command("ops"))
    live: list[UUID] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("trading", total=count)
        for inst in stocks:  # makers quote both sides, three levels deep
            for level in range(1, 4):
                for side, sign in (("buy", -1), ("sell", 1)):
                    maker = makers[level % 2]
                    price = _price(inst, sign * level)
                    _send(app, maker, inst, side, 100 * rng.randint(3, 10), price, "gtc",
                          stats, live, f"q-{inst.symbol}-{side}-{level}")
        for n in range(count):
            inst = rng.choice(stocks)
            trader = rng.choice(traders)
            roll = rng.random()
            if roll < 0.08 and live:
                _cancel(app, rng.choice(live), stats)
            elif roll < 0.14 and live:
                _amend(app, rng.choice(live), rng, stats)
            else:
                position = app.get_position(trader, inst.symbol)
                held = position.available if position else 0
                side = "sell" if held >= 100 and rng.random() < 0.45 else "buy"
                qty = 100 * rng.randint(1, 5)
                if side == "sell":
                    qty = min(qty, held // 100 * 100)
                tif = rng.choices(["day", "ioc", "gtc", "fok", "market"], [60, 15, 15, 5, 5])[0]
                ticks = rng.randint(-2, 2) * (1 if side == "buy" else -1)
                _send(app, trader, inst, side, qty, _price(inst, ticks), tif, stats, live,
                      f"o-{n}")
            progress.advance(task)
    return stats


def _price(inst: Instrument, ticks: int) -> int:
    price = inst.base_price
    step = inst.tick_size(price)
    return round_to_tick(price + ticks * step, inst.tick_table, "down")


def _send(app: TradingApplication, account: UUID, inst: Instrument, side: str, qty: int,
          price: int, tif: str, stats: Counter[str], live: list[UUID], cid: str) -> None:
    market = tif == "market"
    try:
        placed = app.place_order(account, client_order_id=cid, symbol=inst.symbol, side=side,
                                 quantity=qty, price=0 if market else price,
                                 order_type="market" if market else "limit",
                                 tif="ioc" if market else tif, meta=Meta.command("demo"))
        stats["orders placed"] += 1
        if app.get_order(placed.order_id).is_open:
            live.append(placed.order_id)
    except DomainError as err:
        stats[f"refused: {err.rule}"] += 1


def _cancel(app: TradingApplication, order_id: UUID, stats: Counter[str]) -> None:
    try:
        app.cancel_order(order_id, Meta.command("demo"))
        stats["cancels sent"] += 1
    except DomainError as err:
        stats[f"refused: {err.rule}"] += 1


def _amend(app: TradingApplication, order_id: UUID, rng: random.Random,
           stats: Counter[str]) -> None:
    order = app.get_order(order_id)
    inst = app.universe.get(order.symbol)
    try:
        if rng.random() < 0.5:
            app.amend_order(order_id, quantity=max(order.filled_quantity + 100,
                                                   order.quantity - 100),
                            price=order.price, meta=Meta.command("demo"))
        else:
            step = inst.tick_size(order.price) * rng.choice([-1, 1])
            price = round_to_tick(order.price + step, inst.tick_table, "down")
            app.amend_order(order_id, quantity=order.quantity, price=price,
                            meta=Meta.command("demo"))
        stats["amends sent"] += 1
    except DomainError as err:
        stats[f"refused: {err.rule}"] += 1


def report(app: TradingApplication, stats: Counter[str], elapsed: float) -> None:
    accounts = [app.get_account(a) for a in app.ids_of(Account)]
    orders = [app.get_order(o) for o in app.ids_of(Order)]
    status = Counter(o.status.value for o in orders)
    table = Table(title="accounts (yen)")
    for col in ("account", "cash", "reserved", "bought", "sold", "fees", "realised PnL"):
        table.add_column(col, justify="right" if col != "account" else "left")
    positions = Table(title="positions")
    for col in ("account", "symbol", "name", "shares", "avg cost (yen)", "realised PnL (yen)"):
        positions.add_column(col, justify="left" if col in ("account", "symbol", "name")
                             else "right", no_wrap=col in ("symbol", "name"))
    for account in accounts:
        realised = 0
        for symbol in sorted({o.symbol for o in orders if o.account_id == account.id}):
            pos = app.get_position(account.id, symbol)
            if pos is None:
                continue
            realised += pos.realised_pnl
            if pos.quantity or pos.realised_pnl:
                avg = pos.cost / pos.quantity if pos.quantity else 0.0
                positions.add_row(account.name, symbol, app.universe.get(symbol).name,
                                  f"{pos.quantity:,}", f"{avg:,.1f}", f"{pos.realised_pnl:,}")
        table.add_row(account.name, f"{account.cash:,}", f"{account.reserved:,}",
                      f"{account.bought:,}", f"{account.sold:,}", f"{account.fees:,}",
                      f"{realised:,}")
    console.print(positions)
    console.print(table)
    events = Counter(n.topic.rsplit(":", 1)[-1] for n in _all_notifications(app))
    counts = Table(title="events stored")
    counts.add_column("event")
    counts.add_column("count", justify="right")
    for name, n in sorted(events.items()):
        counts.add_row(name, f"{n:,}")
    counts.add_row("[bold]total[/]", f"[bold]{sum(events.values()):,}[/]")
    console.print(counts)
    console.print("orders by status: " + ", ".join(f"{k}={v}" for k, v in sorted(status.items())))
    console.print("session: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))
    console.print(f"{stats['orders placed']} orders through the full saga in {elapsed:.2f}s; "
                  f"prices in yen use {PRICE_SCALE} price units per yen")


def _all_notifications(app: TradingApplication) -> list[Any]:
    out: list[Any] = []
    start = 1
    while True:
        batch = app.recorder.select_notifications(start=start, limit=5000)
        if not batch:
            return out
        out.extend(batch)
        start = batch[-1].id + 1
