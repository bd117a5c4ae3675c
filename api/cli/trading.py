"""Operator commands on the configured store: accounts, orders, audit trails.

Prices on the command line are in yen (``2500`` or ``2500.5``); events store integer
price units (tenths of a yen).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from aggregates import ids
from aggregates.application import TradingApplication
from aggregates.base import Meta
from aggregates.errors import DomainError, RuleViolation
from aggregates.instruments import PRICE_SCALE
from api.wiring import stepped_app
from infra.settings import get_settings

console = Console(width=140)
account_app = typer.Typer(no_args_is_help=True, help="Open, fund and inspect accounts.")
order_app = typer.Typer(no_args_is_help=True, help="Place, amend and cancel orders.")
market_app = typer.Typer(no_args_is_help=True, help="Risk halts per symbol; session close.")


@contextmanager
def _app() -> Iterator[TradingApplication]:
    app = stepped_app(get_settings())
    try:
        yield app
    except DomainError as err:
        console.print(f"[red]refused[/]: {err.message} (field={err.field}, rule={err.rule})")
        raise typer.Exit(2) from None
    finally:
        app.close()


def _meta(principal: str) -> Meta:
    return Meta.command(principal)


def _price_units(yen: str) -> int:
    try:
        units = Decimal(yen) * PRICE_SCALE
    except InvalidOperation:
        raise RuleViolation("price", "a number of yen", yen) from None
    if units != units.to_integral_value():
        raise RuleViolation("price", f"a multiple of {1 / PRICE_SCALE} yen", yen)
    return int(units)


def _account(name_or_id: str) -> UUID:
    try:
        return UUID(name_or_id)
    except ValueError:
        return ids.account_id(name_or_id)


@account_app.command("open")
def account_open(name: str, owner: str = typer.Option("operator"),
                 allow_short: bool = typer.Option(False)) -> None:
    with _app() as app:
        account_id = app.open_account(name, owner=owner, meta=_meta(owner),
                                      allow_short=allow_short)
        console.print(f"account {name} opened: {account_id}")


@account_app.command("deposit")
def account_deposit(account: str, amount: int, principal: str = "operator") -> None:
    with _app() as app:
        app.deposit(_account(account), amount, _meta(principal))
        _show(app, _account(account))


@account_app.command("withdraw")
def account_withdraw(account: str, amount: int, principal: str = "operator") -> None:
    with _app() as app:
        app.withdraw(_account(account), amount, _meta(principal))
        _show(app, _account(account))


@account_app.command("halt")
def account_halt(account: str, reason: str = typer.Option(...), principal: str = "risk") -> None:
    """Stop new orders for an account (the risk halt switch)."""
    with _app() as app:
        app.halt_account(_account(account), reason, _meta(principal))
        _show(app, _account(account))


@account_app.command("resume")
def account_resume(account: str, principal: str = "risk") -> None:
    with _app() as app:
        app.resume_account(_account(account), _meta(principal))
        _show(app, _account(account))


@market_app.command("halt")
def market_halt(symbol: str, reason: str = typer.Option(...), principal: str = "risk") -> None:
    """Stop new orders in a symbol."""
    with _app() as app:
        app.halt_symbol(symbol, reason, _meta(principal))
        console.print(f"{symbol} halted: {reason}")


@market_app.command("resume")
def market_resume(symbol: str, principal: str = "risk") -> None:
    with _app() as app:
        app.resume_symbol(symbol, _meta(principal))
        console.print(f"{symbol} resumed")


@market_app.command("close-session")
def market_close_session(session_date: str, principal: str = "operations") -> None:
    """End the trading day: resting DAY orders expire and release their reservations."""
    with _app() as app:
        app.close_session(session_date, _meta(principal))
        console.print(f"session {session_date} closed")


@account_app.command("show")
def account_show(account: str) -> None:
    with _app() as app:
        _show(app, _account(account))


def _show(app: TradingApplication, account_id: UUID) -> None:
    acc = app.get_account(account_id)
    table = Table(title=f"account {acc.name} ({acc.id})")
    for col in ("cash", "reserved", "available", "fees", "halted"):
        table.add_column(col, justify="right")
    table.add_row(f"{acc.cash:,}", f"{acc.reserved:,}", f"{acc.available:,}", f"{acc.fees:,}",
                  str(acc.halted))
    console.print(table)


@order_app.command("place")
def order_place(
    account: str, symbol: str, side: str, quantity: int,
    price: str = typer.Option("0", help="Limit price in yen; 0 for market orders."),
    order_type: str = typer.Option("limit", "--type"),
    tif: str = typer.Option("day"),
    client_order_id: str = typer.Option(..., help="Your id; resending it is idempotent."),
    principal: str = "operator",
) -> None:
    with _app() as app:
        placed = app.place_order(_account(account), client_order_id=client_order_id,
                                 symbol=symbol, side=side, quantity=quantity,
                                 price=_price_units(price), order_type=order_type, tif=tif,
                                 meta=_meta(principal))
        _show_order(app, placed.order_id, "placed" if placed.created else "already placed")


@order_app.command("amend")
def order_amend(order_id: UUID, quantity: int, price: str, principal: str = "operator") -> None:
    with _app() as app:
        app.amend_order(order_id, quantity=quantity, price=_price_units(price),
                        meta=_meta(principal))
        _show_order(app, order_id, "amend requested")


@order_app.command("cancel")
def order_cancel(order_id: UUID, principal: str = "operator") -> None:
    with _app() as app:
        app.cancel_order(order_id, _meta(principal))
        _show_order(app, order_id, "cancel requested")


def _show_order(app: TradingApplication, order_id: UUID, what: str) -> None:
    o = app.get_order(order_id)
    console.print(f"{what}: order {o.id} {o.side.value} {o.quantity} {o.symbol} @ "
                  f"{o.price / PRICE_SCALE:g} yen {o.tif.value} -> {o.status.value}, filled "
                  f"{o.filled_quantity}, fees {o.fees} yen")


def events(aggregate: str = typer.Argument(..., help="Aggregate id, or an account name.")) -> None:
    """The audit trail of one aggregate: every event, who caused it and why."""
    with _app() as app:
        history = app.history(_account(aggregate))
        if not history:
            console.print(f"[red]no events for {aggregate}[/]")
            raise typer.Exit(1)
        table = Table(title=f"events of {history[0].originator_id}")
        for col in ("v", "time (UTC)", "event", "principal", "caused by", "details"):
            table.add_column(col)
        skip = {"originator_id", "originator_version", "timestamp", "principal",
                "command_id", "correlation_id", "causation_id", "originator_topic"}
        for e in history:
            details = ", ".join(f"{k}={v}" for k, v in vars(e).items() if k not in skip)
            table.add_row(str(e.originator_version), e.timestamp.strftime("%H:%M:%S.%f"),
                          type(e).__qualname__, e.principal, e.causation_id[:24], details[:90])
        console.print(table)
