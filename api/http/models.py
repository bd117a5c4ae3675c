"""Request and response bodies of the HTTP API (pydantic, so OpenAPI documents them).

Requests are strict: integers must be JSON integers (no ``1.0``, no strings, no NaN),
enums are closed, unknown fields are refused, free text holds no control characters,
and every bound is stated, so a bad field is a 422 naming it before any command runs.
Money is integer yen; prices are integer price units of 0.1 yen (``29000`` is 2,900.0
yen); quantities are shares.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

from aggregates.text import NO_CONTROL_CHARACTERS, first_control_character

Yen = Annotated[StrictInt, Field(gt=0, le=10**13, description="Integer yen.")]
Shares = Annotated[StrictInt, Field(gt=0, le=10**9, description="Shares (a multiple of the lot).")]
PriceUnits = Annotated[StrictInt, Field(ge=0, le=10**10,
                                        description="Tenths of a yen; 0 for market orders.")]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Symbol = Annotated[str, Field(min_length=1, max_length=12, pattern=r"^[0-9A-Z]+$")]
SymbolPath = Annotated[str, Path(min_length=1, max_length=12, pattern=r"^[0-9A-Z]+$",
                                 description="Exchange code, e.g. 7203.")]


def _printable(text: str) -> str:
    """Free text is read back in terminals and browsers: a NUL or an escape sequence
    stored there hides or rewrites what an operator sees (``aggregates.text``)."""
    at = first_control_character(text)
    if at is not None:
        raise PydanticCustomError("control_character", NO_CONTROL_CHARACTERS,
                                  {"character": f"U+{ord(text[at]):04X}", "position": at})
    return text


Reason = Annotated[str, Field(min_length=1, max_length=200,
                              description="Free text without control characters."),
                   AfterValidator(_printable)]


def _calendar_date(text: str) -> str:
    """The pattern alone let ``2024-13-45`` through, and it was stored as a closed session."""
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError("a calendar date (YYYY-MM-DD)") from None
    return text


SessionDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$",
                                   json_schema_extra={"format": "date"}),
                        AfterValidator(_calendar_date)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAccount(Strict):
    name: Name
    owner: Name
    allow_short: StrictBool = False


class CashMovement(Strict):
    amount: Yen


class PlaceOrder(Strict):
    account_id: UUID
    client_order_id: Name | None = Field(
        default=None, description="Defaults to the Idempotency-Key header.")
    symbol: Symbol
    side: Literal["buy", "sell"]
    quantity: Shares
    price: PriceUnits = 0
    order_type: Literal["limit", "market"] = "limit"
    tif: Literal["day", "gtc", "ioc", "fok"] = "day"


class AmendOrder(Strict):
    quantity: Shares
    price: Annotated[StrictInt, Field(gt=0, le=10**10, description="Tenths of a yen.")]


class Halt(Strict):
    reason: Reason


class CloseSession(Strict):
    session_date: SessionDate


class Accepted(BaseModel):
    """What a command answers: the ids it touched and where its events are in the log."""

    position: int = Field(description="Notification position of the command's last event; "
                                      "pass it as min_position to read your own write.")
    status: str
    account_id: UUID | None = None
    order_id: UUID | None = None
    created: bool | None = None


class OrderView(BaseModel):
    order_id: UUID
    seq: int
    account_id: UUID
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    tif: str
    quantity: int
    price: int
    status: str
    filled_quantity: int
    filled_notional: int
    fees: int
    reason: str
    created_at: datetime
    updated_at: datetime
    version: int


class OrderEvent(BaseModel):
    version: int
    seq: int
    ts: datetime
    event: str
    status: str
    principal: str
    correlation_id: str
    detail: dict[str, Any]


class OrderDetail(OrderView):
    history: list[OrderEvent]


class FillView(BaseModel):
    ts: datetime
    seq: int
    execution_id: str
    order_id: UUID
    account_id: UUID
    symbol: str
    side: str
    price: int
    quantity: int
    notional: int
    fee: int
    liquidity: str


class PositionView(BaseModel):
    account_id: UUID
    symbol: str
    quantity: int
    cost: int
    realised_pnl: int
    reserved: int
    updated_at: datetime
    version: int


class BalanceView(BaseModel):
    account_id: UUID
    name: str
    owner: str
    cash: int
    reserved: int
    available: int
    deposited: int
    withdrawn: int
    bought: int
    sold: int
    fees: int
    halted: bool
    updated_at: datetime
    version: int


class SymbolHalt(BaseModel):
    symbol: str
    reason: str
    principal: str = Field(description="Who halted it.")
    halted_at: datetime


class AccountHalt(BaseModel):
    account_id: UUID
    name: str
    reason: str
    principal: str = Field(description="Who halted it.")
    halted_at: datetime


class Halts(BaseModel):
    """What is halted now (read model ``halts``): orders in these are refused."""

    symbols: list[SymbolHalt]
    accounts: list[AccountHalt] = Field(
        description="Only accounts the caller may see (risk and admin: all).")


class LedgerEntry(BaseModel):
    ts: datetime
    seq: int
    account_id: UUID
    entry: str
    amount: int
    fee: int
    cash_after: int
    order_id: UUID | None
    execution_id: str | None


class PnlPoint(BaseModel):
    bucket: datetime
    realised: int
    unrealised: int
    fees: int
    net: int


class Bar(BaseModel):
    bucket: datetime
    open: int
    high: int
    low: int
    close: int
    volume: int
    notional: int
    trades: int


class Level(BaseModel):
    price: int
    quantity: int
    orders: int


class Book(BaseModel):
    symbol: str
    bids: list[Level]
    asks: list[Level]
    last_price: int | None


class OrderPage(BaseModel):
    items: list[OrderView]
    next_cursor: int | None


class FillPage(BaseModel):
    items: list[FillView]
    next_cursor: int | None


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: int | None


class ProjectionLag(BaseModel):
    name: str
    position: int
    head: int
    behind: int


class StageLag(BaseModel):
    """A stage of the order flow: its tracked input position and the inputs waiting."""

    name: str = Field(description="stage@source:partition, e.g. saga@trading:0")
    position: int
    behind: int
    running: bool = Field(description="this process runs it (else another process does)")
    state: str = Field(description="waiting (another process holds its fence), starting "
                                   "(rebuilding its memory), running, or failed")
    error: str | None = None


class Health(BaseModel):
    status: str
    projections: list[ProjectionLag] = []
    stages: list[StageLag] = []


class TickBandView(BaseModel):
    """A price ``p`` with ``lower <= p <= upper`` is on the grid when ``p % tick == 0``
    (a price equal to a band's ``upper`` belongs to that band, as JPX counts it)."""

    lower: int
    upper: int
    tick: int


class InstrumentView(BaseModel):
    """What an order ticket needs to know about a symbol today (prices in tenths of a yen)."""

    symbol: str
    name: str
    lot_size: int = Field(description="Quantities are whole multiples of this (shares).")
    tick_table: str = Field(description="JPX tick table: standard or topix100.")
    base_price: int = Field(description="The previous close the day's limits come from.")
    lower_limit: int = Field(description="Lowest price accepted today (inclusive).")
    upper_limit: int = Field(description="Highest price accepted today (inclusive).")
    ticks: list[TickBandView] = Field(
        description="The tick grid between today's limits, band by band.")
    last_price: int | None = Field(description="The venue's last trade price, if any.")
