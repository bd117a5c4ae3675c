"""Operator commands on the configured store: accounts, orders, halts, audit trails.

Units on the command line: prices in yen (``7490`` or ``7490.5``; events store integer
tenths of a yen), cash in integer yen, quantities in shares (a multiple of the 100-share
lot). Accounts are named by the name they were opened with, or by their id.

Commands that change something run the stages of the order flow in this process until
they are idle (unless a server runs them); commands that only read (``account show``,
``events``) open the write model alone, so they start quickly.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aggregates.application import TradingApplication
from aggregates.audit import AUDIT_FIELDS, own_fields
from aggregates.base import Meta
from aggregates.errors import RuleViolation
from aggregates.ids import account_ref
from aggregates.instruments import PRICE_SCALE
from aggregates.order import OrderType, Side, TimeInForce
from aggregates.text import printable
from api.cli.refusal import refusing
from infra.settings import get_settings

console = Console()  # the terminal's width (COLUMNS when set): nothing is cut to fit 140
account_app = typer.Typer(no_args_is_help=True, help="Open, fund, halt and inspect accounts.")
order_app = typer.Typer(no_args_is_help=True, help="Place, amend and cancel orders.")
market_app = typer.Typer(no_args_is_help=True,
                         help="Halt and resume trading in a symbol; close the session.")

# -- arguments and options shared by the commands ---------------------------------------
AccountArg = Annotated[str, typer.Argument(
    metavar="ACCOUNT", help="Account name (as opened) or account id.", show_default=False)]
SymbolArg = Annotated[str, typer.Argument(
    metavar="SYMBOL", help="Exchange code, e.g. 7203 (Toyota).", show_default=False)]
OrderIdArg = Annotated[UUID, typer.Argument(
    metavar="ORDER_ID", help="Order id, as `order place` printed it.", show_default=False)]
YenArg = Annotated[int, typer.Argument(
    metavar="AMOUNT", min=1, help="Integer yen, e.g. 10000000 for ten million yen.",
    show_default=False)]


def _principal(default: str) -> Any:
    return typer.Option(default, "--principal",
                        help="Who is acting: recorded as the principal of every event.")


Reason = Annotated[str, typer.Option(
    "--reason", help="Why, in words (kept in the audit trail; no control characters).",
    show_default=False)]


# -- the write model ------------------------------------------------------------------------
def _app(*, stepped: bool = True) -> AbstractContextManager[TradingApplication]:
    """The write model; ``stepped``: with the stages run after each command."""
    from api.wiring import stepped_app, trading_app

    settings = get_settings()
    return refusing(lambda: stepped_app(settings) if stepped else trading_app(settings))


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




# -- accounts ---------------------------------------------------------------------------------
@account_app.command("open")
def account_open(
    name: Annotated[str, typer.Argument(
        metavar="NAME", show_default=False,
        help="Account name: letters, digits and . _ : - (at most 64); its id derives "
             "from it.")],
    owner: Annotated[str, typer.Option(
        help="Who the account belongs to (a person or desk).")] = "operator",
    allow_short: Annotated[bool, typer.Option(
        help="May sell shares it does not hold (market makers).")] = False,
    principal: str = _principal("operator"),
) -> None:
    """Open a cash account NAME. Fund it with `account deposit`."""
    with _app() as app:
        account_id = app.open_account(name, owner=owner, meta=_meta(principal),
                                      allow_short=allow_short)
        console.print(f"account {name} opened: {account_id}")


@account_app.command("deposit")
def account_deposit(account: AccountArg, amount: YenArg,
                    principal: str = _principal("operator")) -> None:
    """Credit AMOUNT yen to ACCOUNT; prints the balance."""
    with _app() as app:
        app.deposit(account_ref(account), amount, _meta(principal))
        _show(app, account_ref(account))


@account_app.command("withdraw")
def account_withdraw(account: AccountArg, amount: YenArg,
                     principal: str = _principal("operator")) -> None:
    """Debit AMOUNT yen from ACCOUNT's available cash (cash not reserved by open orders)."""
    with _app() as app:
        app.withdraw(account_ref(account), amount, _meta(principal))
        _show(app, account_ref(account))


@account_app.command("halt")
def account_halt(account: AccountArg, reason: Reason,
                 principal: str = _principal("risk")) -> None:
    """Stop new orders for ACCOUNT (the risk halt switch); resting orders stay."""
    with _app() as app:
        app.halt_account(account_ref(account), printable("reason", reason), _meta(principal))
        _show(app, account_ref(account))


@account_app.command("resume")
def account_resume(account: AccountArg, principal: str = _principal("risk")) -> None:
    """Allow new orders for a halted ACCOUNT again."""
    with _app() as app:
        app.resume_account(account_ref(account), _meta(principal))
        _show(app, account_ref(account))


@account_app.command("show")
def account_show(account: AccountArg) -> None:
    """ACCOUNT's cash, reserved cash (held by open buy orders and fees), available cash
    and fees paid, in yen, and whether it is halted."""
    with _app(stepped=False) as app:
        _show(app, account_ref(account))


def _show(app: TradingApplication, account_id: UUID) -> None:
    acc = app.get_account(account_id)
    table = Table(title=f"account {acc.name} ({acc.id}), yen")
    for col in ("cash", "reserved", "available", "fees", "halted"):
        table.add_column(col, justify="right")
    table.add_row(f"{acc.cash:,}", f"{acc.reserved:,}", f"{acc.available:,}", f"{acc.fees:,}",
                  str(acc.halted))
    console.print(table)


# -- market -----------------------------------------------------------------------------------
@market_app.command("halt")
def market_halt(symbol: SymbolArg, reason: Reason,
                principal: str = _principal("risk")) -> None:
    """Stop new orders in SYMBOL (a risk halt); resting orders stay."""
    with _app() as app:
        app.halt_symbol(symbol, printable("reason", reason), _meta(principal))
        console.print(Text(f"{symbol} halted: {reason}"))


@market_app.command("resume")
def market_resume(symbol: SymbolArg, principal: str = _principal("risk")) -> None:
    """Allow orders in a halted SYMBOL again."""
    with _app() as app:
        app.resume_symbol(symbol, _meta(principal))
        console.print(f"{symbol} resumed")


@market_app.command("close-session")
def market_close_session(
    session_date: Annotated[str | None, typer.Argument(
        metavar="[SESSION_DATE]", show_default=False,
        help="YYYY-MM-DD: today's session in Tokyo (the default) or one of the 7 days "
             "before it.")] = None,
    principal: str = _principal("operations"),
) -> None:
    """End a trading session: its resting DAY orders expire and release their
    reservations; GTC orders stay."""
    from aggregates.market import today_in_tokyo

    with _app() as app:
        day = session_date or today_in_tokyo(app.clock.now()).isoformat()
        app.close_session(day, _meta(principal))
        console.print(f"session {day} closed")


# -- orders -----------------------------------------------------------------------------------
@order_app.command("place")
def order_place(
    account: AccountArg,
    symbol: SymbolArg,
    side: Annotated[Side, typer.Argument(metavar="SIDE", show_default=False,
                                         help="buy or sell.")],
    quantity: Annotated[int, typer.Argument(
        metavar="QUANTITY", show_default=False,
        help="Shares: a multiple of the 100-share lot.")],
    price: Annotated[str, typer.Option(
        help="Limit price in yen, e.g. 7490 or 7490.5 (on the stock's tick); 0 for a "
             "market order.")] = "0",
    order_type: Annotated[OrderType, typer.Option(
        "--type", help="limit: at PRICE or better; market: at any price (with --tif "
                       "ioc).")] = OrderType.LIMIT,
    tif: Annotated[TimeInForce, typer.Option(
        help="Time in force. day: until the session closes; gtc: until cancelled; ioc: "
             "fill what can fill now, cancel the rest; fok: all of it now or nothing."
    )] = TimeInForce.DAY,
    client_order_id: Annotated[str, typer.Option(
        help="Your id for the order (1-64 characters); sending it again with the same "
             "terms places nothing new.", show_default=False)] = ...,  # type: ignore[assignment]
    principal: str = _principal("operator"),
) -> None:
    """Place an order for ACCOUNT: SIDE QUANTITY shares of SYMBOL."""
    with _app() as app:
        placed = app.place_order(account_ref(account),
                                 client_order_id=printable("client_order_id", client_order_id),
                                 symbol=symbol, side=side.value, quantity=quantity,
                                 price=_price_units(price), order_type=order_type.value,
                                 tif=tif.value, meta=_meta(principal))
        _show_order(app, placed.order_id, "placed" if placed.created else "already placed")


@order_app.command("amend")
def order_amend(
    order_id: OrderIdArg,
    quantity: Annotated[int, typer.Argument(
        metavar="QUANTITY", show_default=False,
        help="New total quantity in shares (a lot multiple, not below what has filled).")],
    price: Annotated[str, typer.Argument(
        metavar="PRICE", show_default=False,
        help="New limit price in yen, e.g. 7490 or 7490.5.")],
    principal: str = _principal("operator"),
) -> None:
    """Ask the venue to change a working limit order's QUANTITY and PRICE."""
    with _app() as app:
        app.amend_order(order_id, quantity=quantity, price=_price_units(price),
                        meta=_meta(principal))
        _show_order(app, order_id, "amend requested")


@order_app.command("cancel")
def order_cancel(order_id: OrderIdArg, principal: str = _principal("operator")) -> None:
    """Cancel what is left of an order (filled shares stay filled)."""
    with _app() as app:
        app.cancel_order(order_id, _meta(principal))
        _show_order(app, order_id, "cancel requested")


def _show_order(app: TradingApplication, order_id: UUID, what: str) -> None:
    o = app.get_order(order_id)
    console.print(f"{what}: order {o.id} {o.side.value} {o.quantity} {o.symbol} @ "
                  f"{o.price / PRICE_SCALE:g} yen {o.tif.value} -> {o.status.value}, filled "
                  f"{o.filled_quantity}, fees {o.fees} yen")


# -- the audit trail --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def events(
    aggregate: Annotated[str, typer.Argument(
        metavar="ID_OR_ACCOUNT", show_default=False,
        help="Aggregate id (order, account, position), or an account name.")],
    long: Annotated[bool, typer.Option(
        "--long", help="One line per field instead of a table.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="JSON, one object per event, every field.")] = False,
) -> None:
    """The audit trail of one aggregate: every event in order, when, who acted
    (principal), what caused it and all its details. Prices in events are integer
    tenths of a yen, cash integer yen. The whole log: `tradecore events export|import`;
    state as of a time: `tradecore audit show`."""
    with _app(stepped=False) as app:
        history = app.history(account_ref(aggregate))
        if not history:
            console.print(f"no events for {aggregate}", style="red", highlight=False)
            raise typer.Exit(1)
        if as_json:
            for e in history:
                typer.echo(json.dumps({
                    "aggregate_id": str(e.originator_id), "version": e.originator_version,
                    "event": type(e).__qualname__, "timestamp": e.timestamp.isoformat(),
                    **{k: getattr(e, k) for k in AUDIT_FIELDS}, **_plain(own_fields(e))}))
            return
        if long:
            for e in history:
                console.print(f"v{e.originator_version} {e.timestamp.isoformat()} "
                              f"{type(e).__qualname__}", style="bold", highlight=False)
                for key, value in {**{k: getattr(e, k) for k in AUDIT_FIELDS},
                                   **own_fields(e)}.items():
                    console.print(f"  {key}: {_plain(value)}", highlight=False, markup=False)
            return
        table = Table(title=f"events of {history[0].originator_id}")
        table.add_column("v", justify="right")
        table.add_column("time (UTC)", no_wrap=True)
        table.add_column("event", no_wrap=True)
        table.add_column("principal")
        table.add_column("caused by", overflow="fold")
        table.add_column("details", overflow="fold", ratio=1)
        for e in history:
            details = ", ".join(f"{k}={_plain(v)}" for k, v in own_fields(e).items())
            table.add_row(str(e.originator_version), e.timestamp.strftime("%H:%M:%S.%f"),
                          type(e).__qualname__, Text(e.principal), Text(e.causation_id),
                          Text(details))
        console.print(table, highlight=False)
