"""Query routes over the read models (and the book as the venue publishes it).

Lists are scoped to the caller's accounts (a filter on an account the token does not
cover is a 403). A route that takes an order or account id answers an id the caller may
not see exactly as it answers an unknown one (404, same body): ids derive from account
names and client order ids, so anything else would let a caller test guesses. Every
read accepts ``min_position`` to wait until a command's own events are projected
(read-your-writes).
"""

# No `from __future__ import annotations`: FastAPI must see the route-local aliases.
import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BeforeValidator

from aggregates.errors import RuleViolation
from aggregates.instruments import Instrument
from api.http.deps import Context, account_scope, no_account, no_order
from api.http.models import (
    AccountHalt,
    BalanceView,
    Bar,
    Book,
    FillPage,
    Halts,
    InstrumentView,
    LedgerPage,
    Level,
    OrderDetail,
    OrderPage,
    PnlPoint,
    PositionView,
    SymbolHalt,
    SymbolPath,
    TickBandView,
)
from api.problems import PROBLEM_RESPONSES, problem_responses
from api.security import Principal, require_see
from projections.queries import BUCKETS, ReadModels

Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
SymbolFilter = Annotated[str | None, Query(min_length=1, max_length=12, pattern=r"^[0-9A-Z]+$",
                                           description="Exchange code, e.g. 7203.")]
Cursor = Annotated[int | None, Query(ge=0, le=2**62,
                                     description="next_cursor of the previous page.")]
_ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ].*)?")


def _iso_8601(value: object) -> object:
    """Pydantic would read ``since=2024`` as 2024 seconds after 1970: only ISO 8601 here."""
    if isinstance(value, str) and not _ISO_8601.fullmatch(value):
        raise ValueError("an ISO 8601 date or date-time, e.g. 2024-01-04T09:00:00+09:00")
    return value


Since = Annotated[datetime | None, BeforeValidator(_iso_8601),
                  Query(description="From this time (inclusive, ISO 8601).")]
Until = Annotated[datetime | None, BeforeValidator(_iso_8601),
                  Query(description="Before this time (ISO 8601).")]
Bucket = Annotated[Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d"],
                   Query(description="Bucket width (time_bucket).")]
T = TypeVar("T")
Status = Literal["placed", "accepted", "rejected", "working", "partially_filled", "filled",
                 "cancelled", "expired"]


def _utc(moment: datetime | None, field: str) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise RuleViolation(field, "a representable UTC time", moment.isoformat()) from None


def _window(since: datetime | None, until: datetime | None
            ) -> tuple[datetime | None, datetime | None]:
    start, end = _utc(since, "since"), _utc(until, "until")
    if start is not None and end is not None and end < start:
        raise RuleViolation("until", "not before since", end.isoformat())
    return start, end


def router(context: Context) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["queries"],
                    responses={**PROBLEM_RESPONSES, **problem_responses(503)})
    caller = Annotated[Principal, Depends(context.caller)]
    reads = Annotated[ReadModels, Depends(context.reader())]

    @api.get("/orders", response_model=OrderPage)
    async def list_orders(principal: caller, rm: reads, account_id: UUID | None = None,
                          symbol: SymbolFilter = None,
                          status: Status | None = None, since: Since = None,
                          until: Until = None, cursor: Cursor = None,
                          limit: Limit = 100) -> OrderPage:
        """Orders newest first, filtered; only accounts the caller may see."""
        if account_id is not None:
            require_see(principal, account_id)
        start, end = _window(since, until)
        page = await asyncio.to_thread(
            rm.orders, accounts=account_scope(principal),
            account_id=str(account_id) if account_id else None, symbol=symbol,
            status=status, since=start, until=end, cursor=cursor, limit=limit)
        return OrderPage.model_validate(page, from_attributes=True)

    @api.get("/orders/{order_id}", response_model=OrderDetail)
    async def get_order(order_id: UUID, principal: caller, rm: reads) -> OrderDetail:
        """One order with its event history."""
        order = await asyncio.to_thread(rm.order, str(order_id))
        if order is None or not principal.can_see(UUID(order["account_id"])):
            raise no_order(order_id)
        history = await asyncio.to_thread(rm.order_events, str(order_id))
        return OrderDetail.model_validate({**order, "history": history})

    @api.get("/fills", response_model=FillPage)
    async def list_fills(principal: caller, rm: reads, account_id: UUID | None = None,
                         order_id: UUID | None = None,
                         symbol: SymbolFilter = None,
                         since: Since = None, until: Until = None, cursor: Cursor = None,
                         limit: Limit = 100) -> FillPage:
        """Executions newest first; only accounts the caller may see."""
        if account_id is not None:
            require_see(principal, account_id)
        start, end = _window(since, until)
        page = await asyncio.to_thread(
            rm.fills, accounts=account_scope(principal),
            account_id=str(account_id) if account_id else None,
            order_id=str(order_id) if order_id else None, symbol=symbol,
            since=start, until=end, cursor=cursor, limit=limit)
        return FillPage.model_validate(page, from_attributes=True)

    async def of_account(principal: Principal, rm: ReadModels, account_id: UUID,
                         read: Callable[[str], T]) -> T:
        """``read(account_id)`` for an account the caller may see and the read models
        hold; else the 404 an unknown id gets (both checked in one trip to a worker
        thread: an extra hop cost every account read about a millisecond under load)."""
        key = str(account_id)

        def visible_then_read() -> T | None:
            if not principal.can_see(account_id) or rm.balance(key) is None:
                return None
            return read(key)

        found = await asyncio.to_thread(visible_then_read)
        if found is None:
            raise no_account(account_id)
        return found

    @api.get("/accounts", response_model=list[BalanceView])
    async def accounts(principal: caller, rm: reads) -> list[BalanceView]:
        """Every account the caller may see, with its balance, by name (the console's
        account picker; risk and admin see the whole desk)."""
        rows = await asyncio.to_thread(rm.balances, account_scope(principal))
        return [BalanceView.model_validate({**r, "available": r["cash"] - r["reserved"]})
                for r in rows]

    @api.get("/instruments", response_model=list[InstrumentView])
    async def instruments(principal: caller) -> list[InstrumentView]:
        """Every tradable symbol with its lot, tick grid and today's price limits."""
        app = context.rt.app
        listed = app.universe.instruments
        last = await asyncio.to_thread(lambda: [app.last_price(i.symbol) for i in listed])
        return [_instrument_view(i, p) for i, p in zip(listed, last, strict=True)]

    @api.get("/instruments/{symbol}", response_model=InstrumentView)
    async def instrument(symbol: SymbolPath, principal: caller) -> InstrumentView:
        """One symbol's lot, tick grid, today's price limits and last price."""
        app = context.rt.app
        listed = app.universe.get(symbol)  # 404 naming the symbol when unknown
        return _instrument_view(listed, await asyncio.to_thread(app.last_price, symbol))

    @api.get("/accounts/{account_id}/positions", response_model=list[PositionView])
    async def positions(account_id: UUID, principal: caller, rm: reads
                        ) -> list[PositionView]:
        """Current positions of one account."""
        rows = await of_account(principal, rm, account_id, rm.positions)
        return [PositionView.model_validate(r) for r in rows]

    @api.get("/accounts/{account_id}/balance", response_model=BalanceView)
    async def balance(account_id: UUID, principal: caller, rm: reads) -> BalanceView:
        """Cash, reservations and totals of one account."""
        row = None
        if principal.can_see(account_id):
            row = await asyncio.to_thread(rm.balance, str(account_id))
        if row is None:
            raise no_account(account_id)
        return BalanceView.model_validate({**row, "available": row["cash"] - row["reserved"]})

    @api.get("/accounts/{account_id}/ledger", response_model=LedgerPage)
    async def ledger(account_id: UUID, principal: caller, rm: reads, since: Since = None,
                     until: Until = None, cursor: Cursor = None,
                     limit: Limit = 100) -> LedgerPage:
        """Cash movements newest first: deposits, withdrawals, settlements."""
        start, end = _window(since, until)
        page = await of_account(principal, rm, account_id, lambda key: rm.ledger(
            key, since=start, until=end, cursor=cursor, limit=limit))
        return LedgerPage.model_validate(page, from_attributes=True)

    @api.get("/accounts/{account_id}/pnl", response_model=list[PnlPoint])
    async def pnl(account_id: UUID, principal: caller, rm: reads, bucket: Bucket = "1h",
                  since: Since = None, until: Until = None) -> list[PnlPoint]:
        """Realised, unrealised (at last trade prices) and fees, per time bucket."""
        start, end = _window(since, until)
        rows = await of_account(principal, rm, account_id, lambda key: rm.pnl(
            key, BUCKETS[bucket], since=start, until=end))
        return [PnlPoint.model_validate(r) for r in rows]

    @api.get("/halts", response_model=Halts)
    async def halts(principal: caller, rm: reads) -> Halts:
        """What is halted now: every symbol halt, and the halted accounts the caller may
        see (orders in either are refused until risk resumes them)."""
        rows = await asyncio.to_thread(rm.halts, account_scope(principal))
        return Halts(
            symbols=[SymbolHalt(symbol=r["target"], reason=r["reason"],
                                principal=r["principal"], halted_at=r["halted_at"])
                     for r in rows if r["kind"] == "symbol"],
            accounts=[AccountHalt(account_id=r["target"], name=r["name"] or "",
                                  reason=r["reason"], principal=r["principal"],
                                  halted_at=r["halted_at"])
                      for r in rows if r["kind"] == "account"])

    @api.get("/market/{symbol}/bars", response_model=list[Bar])
    async def bars(symbol: SymbolPath, principal: caller, rm: reads, bucket: Bucket = "1m",
                   since: Since = None, until: Until = None) -> list[Bar]:
        """OHLCV bars of executions in this venue."""
        context.rt.app.universe.get(symbol)
        start, end = _window(since, until)
        rows = await asyncio.to_thread(rm.bars, symbol, BUCKETS[bucket], since=start, until=end)
        return [Bar.model_validate(r) for r in rows]

    @api.get("/market/{symbol}/book", response_model=Book)
    async def book(symbol: SymbolPath, principal: caller,
                   depth: Annotated[int, Query(ge=1, le=50)] = 10) -> Book:
        """The book as the venue last published it: top ``depth`` levels a side (the
        venue publishes its top 10)."""
        levels, last = await asyncio.to_thread(context.rt.app.book, symbol, depth)
        return Book(symbol=symbol, last_price=last,
                    bids=[Level(price=p, quantity=q, orders=n) for p, q, n in levels["bids"]],
                    asks=[Level(price=p, quantity=q, orders=n) for p, q, n in levels["asks"]])

    return api


def _instrument_view(instrument: Instrument, last_price: int | None) -> InstrumentView:
    """The tick bands clipped to today's limit band: the grid a ticket can offer."""
    limits = instrument.limits
    ticks: list[TickBandView] = []
    lower = 0
    for band in instrument.tick_bands:
        low, high = max(lower, limits.lower), min(band.upper, limits.upper)
        lower = band.upper
        if low <= high and high >= limits.lower:
            ticks.append(TickBandView(lower=low, upper=high, tick=band.tick))
        if band.upper >= limits.upper:
            break
    return InstrumentView(
        symbol=instrument.symbol, name=instrument.name, lot_size=instrument.lot_size,
        tick_table=instrument.tick_table.value, base_price=instrument.base_price,
        lower_limit=limits.lower, upper_limit=limits.upper, ticks=ticks,
        last_price=last_price)
