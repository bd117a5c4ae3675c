"""Projectors: domain events in, read-model rows out, exactly once.

A :class:`Projector` follows the event store's notification log in batches. For each
batch it opens one read-model transaction, lets every :class:`Projection` turn the
events into row changes, writes them (current rows by upsert, history rows by ``COPY``)
and records each projection's last notification in ``projection_tracking`` in that same
transaction. Killed anywhere, it loses at most the uncommitted batch and resumes after
what it recorded, so the read models always equal a fresh rebuild.

Current rows are cached between batches (one projector writes a read-model database);
the cache is dropped whenever a batch fails, and rows are read back from the database.

Four projections, each with its own tracking row (``tradecore projections status``):

- ``orders``: ``orders`` (current), ``order_events`` (history), ``fills``, and one-minute
  ``bars`` from executions (the taker's fill, so each trade counts once);
- ``positions``: ``positions`` (current), ``position_history``, ``marks`` (last trade
  price) and ``pnl`` (realised, unrealised at the marks, fees; a row whenever an
  account's PnL changes);
- ``balances``: ``balances`` (current) and the ``cash_ledger``;
- ``halts``: ``halts`` (current): every symbol and account halted now, with the reason,
  the time and who halted it (the desk console's list; a trader's "HALTED" badge).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from eventsourcing.utils import get_topic

from aggregates.account import Account
from aggregates.instruments import PRICE_SCALE
from aggregates.market import Market
from aggregates.order import Order
from aggregates.position import Position
from projections.store import ReadStore

_COMMON = {"originator_id", "originator_version", "timestamp", "principal", "command_id",
           "correlation_id", "causation_id"}


class EventLog(Protocol):
    """What a projector follows: numbered domain events (the notification log)."""

    def select(self, start: int, limit: int) -> list[tuple[int, Any]]: ...
    def head(self) -> int: ...


class RecorderLog:
    """The notification log of an eventsourcing application's recorder.

    With ``topics`` (see :meth:`Projector.topics`) only those events are read and
    decoded: the venue's reports and the market's bars, a quarter of a backtest's log
    and more of its bytes, are never projected. A batch that reaches the head without
    filling up ends on the head's own notification (which no projection handles), so
    the tracked positions still reach the head, as they do reading the whole log. Only
    for a store written under the current topic names (a backtest's own store): a
    renamed topic's old events would be skipped.
    """

    def __init__(self, recorder: Any, mapper: Any, *, topics: Sequence[str] = ()) -> None:
        self.recorder = recorder
        self.mapper = mapper
        self.topics = list(topics)

    def select(self, start: int, limit: int) -> list[tuple[int, Any]]:
        if not self.topics:
            notifications = list(self.recorder.select_notifications(start=start, limit=limit))
        else:
            head = self.head()
            notifications = list(self.recorder.select_notifications(
                start=start, limit=limit, stop=head, topics=self.topics))
            end = notifications[-1].id if notifications else start - 1
            if len(notifications) < limit and end < head:
                notifications += self.recorder.select_notifications(start=head, limit=1)
        codec = self._codec
        if codec is None:
            to_event = self.mapper.to_domain_event
            return [(n.id, to_event(n)) for n in notifications]
        decode = codec.decode
        return [(n.id, decode(n.topic, n.state, originator_id=n.originator_id,
                              originator_version=n.originator_version))
                for n in notifications]

    @property
    def _codec(self) -> Any:
        """The event codec itself (:class:`infra.codec.CodecMapper`'s), when nothing
        else (a cipher, a compressor) wraps the stored bytes: the projections need the
        event, not the hash-chain head the mapper also hands the aggregates."""
        mapper = self.mapper
        if getattr(mapper, "cipher", None) or getattr(mapper, "compressor", None):
            return None
        return getattr(mapper, "codec", None)

    def head(self) -> int:
        return int(self.recorder.max_notification_id() or 0)


@dataclass
class CurrentRows:
    """Rows of one current-state table, read once and kept while this projector runs.

    ``group_by`` names a column :meth:`where` is asked about (an account's positions):
    its groups are indexed as rows enter the cache, so a lookup costs the group's size,
    not the whole cache's, and each group is read from the database only once.
    """

    table: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    group_by: str | None = None
    cache: dict[Any, dict[str, Any]] = field(default_factory=dict)
    dirty: set[Any] = field(default_factory=set)
    groups: dict[Any, set[Any]] = field(default_factory=dict)  # group value -> keys
    loaded: set[Any] = field(default_factory=set)  # groups read from the database

    def _remember(self, key: Any, row: dict[str, Any]) -> None:
        self.cache[key] = row
        if self.group_by is not None:
            self.groups.setdefault(row[self.group_by], set()).add(key)

    def get(self, store: ReadStore, key: Any) -> dict[str, Any] | None:
        row = self.cache.get(key)
        if row is None:
            keys = key if isinstance(key, tuple) else (key,)
            where = " AND ".join(f"{k} = %s" for k in self.key)
            found = store.fetchone(
                f"SELECT {', '.join(self.columns)} FROM {self.table} WHERE {where}", keys)
            if found is None:
                return None
            row = dict(zip(self.columns, found, strict=True))
            self._remember(key, row)
        return row

    def where(self, store: ReadStore, value: Any) -> list[dict[str, Any]]:
        """Every row whose ``group_by`` column equals ``value`` (cached rows win)."""
        assert self.group_by is not None, f"{self.table}: where() needs group_by"
        if value not in self.loaded:
            for found in store.fetchall(
                f"SELECT {', '.join(self.columns)} FROM {self.table} "
                f"WHERE {self.group_by} = %s", (value,)
            ):
                row = dict(zip(self.columns, found, strict=True))
                key = tuple(row[k] for k in self.key)
                key = key[0] if len(key) == 1 else key
                if key not in self.cache:
                    self._remember(key, row)
            self.loaded.add(value)
        return [self.cache[k] for k in self.groups.get(value, ())]

    def put(self, key: Any, row: dict[str, Any]) -> None:
        self._remember(key, row)
        self.dirty.add(key)

    def touch(self, key: Any) -> None:
        self.dirty.add(key)

    def flush(self, store: ReadStore) -> None:
        if not self.dirty:
            return
        names = ", ".join(self.columns)
        marks = ", ".join("%s" for _ in self.columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in self.key)
        rows = [tuple(self.cache[k][c] for c in self.columns) for k in self.dirty]
        store.executemany(
            f"INSERT INTO {self.table} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}", rows)
        self.dirty.clear()

    def clear(self) -> None:
        self.cache.clear()
        self.dirty.clear()
        self.groups.clear()
        self.loaded.clear()


@dataclass
class History:
    """Rows appended to one history table during a batch."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def flush(self, store: ReadStore) -> None:
        store.insert(self.table, self.columns, self.rows)
        self.rows.clear()


@dataclass(frozen=True)
class Update:
    """A change a client may be told of (WebSocket): an order's new state or a fill."""

    account_id: str
    kind: str  # "order" | "fill"
    data: dict[str, Any]


class Projection:
    """Turns some event types into rows of some tables."""

    name: str = ""
    tables: tuple[str, ...] = ()
    partitionable: bool = False
    """Its rows depend on one aggregate's events only (each row is keyed by the
    aggregate), so shares of the aggregates can be projected apart (:func:`share`)."""

    @property
    def family(self) -> str:
        """``balances`` for the projection and for each of its shares."""
        return self.name.partition(SHARE)[0]

    def __init__(self) -> None:
        self.store: ReadStore | None = None
        self.current: list[CurrentRows] = []
        self.histories: list[History] = []
        self.handlers: dict[type, Callable[[Any, int, Any], None]] = {}
        self.updates: list[Update] = []
        self.collect_updates = False  # set per batch: only when someone listens

    def flush(self, store: ReadStore) -> None:
        for rows in self.current:
            rows.flush(store)
        for history in self.histories:
            history.flush(store)

    def load(self, store: ReadStore) -> None:
        """Write every row held in memory into empty tables (the bulk rebuild): current
        rows by ``COPY`` rather than by upsert, then the history rows left."""
        for rows in self.current:
            store.insert(rows.table, rows.columns,
                         [tuple(row[c] for c in rows.columns) for row in rows.cache.values()])
            rows.dirty.clear()
        for history in self.histories:
            history.flush(store)

    def clear(self) -> None:
        for rows in self.current:
            rows.clear()
        for history in self.histories:
            history.rows.clear()
        self.updates.clear()
        self.after_clear()

    def after_clear(self) -> None:
        """Drop any other state kept between batches."""

    def changed(self, rows: CurrentRows, e: Any, ts: Any) -> dict[str, Any]:
        """The current row of the event's aggregate, stamped with the event and marked
        for writing; it must exist (its creation event came earlier in the log)."""
        key = str(e.originator_id)
        row = rows.get(self.db, key)
        assert row is not None, f"{rows.table}: {key} changed before it was created"
        row["updated_at"], row["version"] = ts, e.originator_version
        rows.touch(key)
        return row

    @property
    def db(self) -> ReadStore:
        assert self.store is not None
        return self.store


_DETAIL = json.JSONEncoder(default=str, sort_keys=True)  # json.dumps's, made once


def _detail(event: Any) -> str:
    # private attributes (the hash-chain digest an event is read with) are no detail
    return _DETAIL.encode({k: v for k, v in vars(event).items()
                           if k not in _COMMON and not k.startswith("_")})


class OrdersProjection(Projection):
    name = "orders"
    tables = ("orders", "order_events", "fills", "bars")

    def __init__(self) -> None:
        super().__init__()
        self.orders = CurrentRows("orders", ("order_id",), (
            "order_id", "seq", "account_id", "client_order_id", "symbol", "side",
            "order_type", "tif", "quantity", "price", "status", "filled_quantity",
            "filled_notional", "fees", "reason", "created_at", "updated_at", "version"))
        self.bars = CurrentRows("bars", ("symbol", "ts"), (
            "ts", "symbol", "open", "high", "low", "close", "volume", "notional", "trades"))
        self.events = History("order_events", (
            "order_id", "version", "seq", "ts", "event", "status", "principal",
            "correlation_id", "detail"))
        self.fills = History("fills", (
            "ts", "seq", "execution_id", "order_id", "account_id", "symbol", "side", "price",
            "quantity", "notional", "fee", "liquidity"))
        self.current = [self.orders, self.bars]
        self.histories = [self.events, self.fills]
        status_of = {Order.Accepted: "accepted", Order.Rejected: "rejected",
                     Order.Routed: "working", Order.Cancelled: "cancelled",
                     Order.Expired: "expired"}
        for kind in (Order.CancelRequested, Order.CancelRouted, Order.CancelRejected,
                     Order.ExpiryRouted, Order.AmendRequested, Order.AmendRouted,
                     Order.AmendRejected, Order.Amended, Order.Accepted, Order.Rejected,
                     Order.Routed, Order.Cancelled, Order.Expired):
            self.handlers[kind] = self._changed(status_of.get(kind))
        self.handlers[Order.Placed] = self._placed
        self.handlers[Order.PartiallyFilled] = self._filled
        self.handlers[Order.Filled] = self._filled

    def _placed(self, e: Any, seq: int, ts: Any) -> None:
        key = str(e.originator_id)
        row = {"order_id": key, "seq": seq, "account_id": str(e.account_id),
               "client_order_id": e.client_order_id, "symbol": e.symbol, "side": e.side,
               "order_type": e.order_type, "tif": e.tif, "quantity": e.quantity,
               "price": e.price, "status": "placed", "filled_quantity": 0,
               "filled_notional": 0, "fees": 0, "reason": "", "created_at": ts,
               "updated_at": ts, "version": e.originator_version}
        self.orders.put(key, row)
        self._history(e, seq, ts, row)

    def _changed(self, status: str | None) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            row = self.changed(self.orders, e, ts)
            if status is not None:
                row["status"] = status
            if isinstance(e, Order.Amended):
                row["quantity"], row["price"] = e.quantity, e.price
            reason = getattr(e, "reason", None)
            if reason and status in ("rejected", "cancelled"):
                row["reason"] = reason
            self._history(e, seq, ts, row)
        return handle

    def _filled(self, e: Any, seq: int, ts: Any) -> None:
        row = self.changed(self.orders, e, ts)
        row["filled_quantity"] += e.quantity
        row["filled_notional"] += e.notional
        row["fees"] += e.fee
        row["status"] = "filled" if isinstance(e, Order.Filled) else "partially_filled"
        self._history(e, seq, ts, row)
        fill = (ts, seq, e.execution_id, row["order_id"], row["account_id"], row["symbol"],
                row["side"], e.price, e.quantity, e.notional, e.fee, e.liquidity)
        self.fills.rows.append(fill)
        if self.collect_updates:
            self.updates.append(Update(row["account_id"], "fill",
                                       dict(zip(self.fills.columns, fill, strict=True))))
        if e.liquidity == "taker":
            self._bar(row["symbol"], e, ts)

    def _bar(self, symbol: str, e: Any, ts: Any) -> None:
        minute = e.timestamp.replace(second=0, microsecond=0)
        key = (symbol, self.db.ts(minute))
        bar = self.bars.get(self.db, key)
        if bar is None:
            bar = {"ts": key[1], "symbol": symbol, "open": e.price, "high": e.price,
                   "low": e.price, "close": e.price, "volume": 0, "notional": 0, "trades": 0}
        bar["high"] = max(bar["high"], e.price)
        bar["low"] = min(bar["low"], e.price)
        bar["close"] = e.price
        bar["volume"] += e.quantity
        bar["notional"] += e.notional
        bar["trades"] += 1
        self.bars.put(key, bar)

    def _history(self, e: Any, seq: int, ts: Any, row: dict[str, Any]) -> None:
        self.events.rows.append((row["order_id"], e.originator_version, seq, ts,
                                 type(e).__name__, row["status"], e.principal,
                                 e.correlation_id, _detail(e)))
        if self.collect_updates:
            self.updates.append(Update(row["account_id"], "order", dict(row)))


@dataclass
class AccountBook:
    """What an account's pnl rows need, kept between them: the realised PnL of all its
    positions and the ids of those holding shares (the only ones with unrealised PnL)."""

    realised: int
    held: set[str]


class PositionsProjection(Projection):
    name = "positions"
    tables = ("positions", "position_history", "marks", "pnl")

    def __init__(self) -> None:
        super().__init__()
        self.positions = CurrentRows("positions", ("position_id",), (
            "position_id", "account_id", "symbol", "quantity", "cost", "realised_pnl",
            "reserved", "updated_at", "version"), group_by="account_id")
        self.marks = CurrentRows("marks", ("symbol",), ("symbol", "price", "ts"))
        self.history = History("position_history", (
            "ts", "seq", "account_id", "symbol", "execution_id", "side", "price", "quantity",
            "quantity_after", "cost_after", "realised"))
        self.pnl = History("pnl", ("ts", "seq", "account_id", "realised", "unrealised",
                                   "fees"))
        self.current = [self.positions, self.marks]
        self.histories = [self.history, self.pnl]
        self.fees: dict[str, int] = {}  # per account, from its last pnl row
        # Per account: the sum of its positions' realised PnL and the keys of those
        # with shares. A pnl row is written on every fill and settlement; summing every
        # position the account ever had (flat ones included) made each row cost the
        # account's history (hundreds of symbols in a long backtest), not its holdings.
        self.books: dict[str, AccountBook] = {}
        self.handlers = {
            Position.Opened: self._opened,
            Position.FillApplied: self._fill,
            Position.SharesReserved: self._reserved(+1),
            Position.SharesReleased: self._reserved(-1),
            Account.BuySettled: self._settled,
            Account.SellSettled: self._settled,
        }

    def after_clear(self) -> None:
        self.fees.clear()
        self.books.clear()

    def _opened(self, e: Any, seq: int, ts: Any) -> None:
        key = str(e.originator_id)  # flat and without PnL: no account book changes
        self.positions.put(key, {
            "position_id": key, "account_id": str(e.account_id), "symbol": e.symbol,
            "quantity": 0, "cost": 0, "realised_pnl": 0, "reserved": 0, "updated_at": ts,
            "version": e.originator_version})

    def _row(self, e: Any, ts: Any) -> dict[str, Any]:
        return self.changed(self.positions, e, ts)

    def _reserved(self, sign: int) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            self._row(e, ts)["reserved"] += sign * e.quantity
        return handle

    def _fill(self, e: Any, seq: int, ts: Any) -> None:
        row = self._row(e, ts)
        row["quantity"], row["cost"] = e.quantity_after, e.cost_after
        row["realised_pnl"] += e.realised
        row["reserved"] -= e.from_reservation
        book = self.books.get(row["account_id"])
        if book is not None:
            book.realised += e.realised
            if row["quantity"]:
                book.held.add(row["position_id"])
            else:
                book.held.discard(row["position_id"])
        self.history.rows.append((ts, seq, row["account_id"], row["symbol"], e.execution_id,
                                  e.side, e.price, e.quantity, e.quantity_after,
                                  e.cost_after, e.realised))
        self.marks.put(row["symbol"], {"symbol": row["symbol"], "price": e.price, "ts": ts})
        self._snapshot(row["account_id"], seq, ts)

    def _settled(self, e: Any, seq: int, ts: Any) -> None:
        account = str(e.originator_id)
        self.fees[account] = self._fees(account) + e.fee
        self._snapshot(account, seq, ts)

    def _fees(self, account: str) -> int:
        if account not in self.fees:
            last = self.db.fetchone(
                "SELECT fees FROM pnl WHERE account_id = %s ORDER BY seq DESC LIMIT 1",
                (account,))
            self.fees[account] = int(last[0]) if last else 0
        return self.fees[account]

    def _book(self, account: str) -> AccountBook:
        """The account's book: summed once from all its positions (cached rows win over
        the database's), then kept by ``_fill``."""
        book = self.books.get(account)
        if book is None:
            rows = self.positions.where(self.db, account)
            book = AccountBook(sum(row["realised_pnl"] for row in rows),
                               {row["position_id"] for row in rows if row["quantity"]})
            self.books[account] = book
        return book

    def _snapshot(self, account: str, seq: int, ts: Any) -> None:
        book = self._book(account)
        realised, unrealised = book.realised, 0
        cache, marks = self.positions.cache, self.marks
        known = marks.cache  # every symbol's mark once it traded: no call per position
        for key in book.held:
            position = cache[key]
            mark = known.get(position["symbol"])
            if mark is None:
                mark = marks.get(self.db, position["symbol"])
            if mark is not None:
                unrealised += (position["quantity"] * mark["price"] // PRICE_SCALE
                               - position["cost"])
        self.pnl.rows.append((ts, seq, account, realised, unrealised, self._fees(account)))


class BalancesProjection(Projection):
    name = "balances"
    tables = ("balances", "cash_ledger")
    partitionable = True  # rows per account, from that account's events

    def __init__(self) -> None:
        super().__init__()
        self.balances = CurrentRows("balances", ("account_id",), (
            "account_id", "name", "owner", "cash", "reserved", "deposited", "withdrawn",
            "bought", "sold", "fees", "halted", "updated_at", "version"))
        self.ledger = History("cash_ledger", (
            "ts", "seq", "account_id", "entry", "amount", "fee", "cash_after", "order_id",
            "execution_id"))
        self.current = [self.balances]
        self.histories = [self.ledger]
        self.handlers = {
            Account.Opened: self._opened,
            Account.Deposited: self._cash("deposit", +1),
            Account.Withdrawn: self._cash("withdrawal", -1),
            Account.FundsReserved: self._reserved(+1),
            Account.FundsReleased: self._reserved(-1),
            Account.BuySettled: self._settled("buy"),
            Account.SellSettled: self._settled("sell"),
            Account.Halted: self._halted(True),
            Account.Resumed: self._halted(False),
        }

    def _opened(self, e: Any, seq: int, ts: Any) -> None:
        key = str(e.originator_id)
        self.balances.put(key, {
            "account_id": key, "name": e.name, "owner": e.owner, "cash": 0, "reserved": 0,
            "deposited": 0, "withdrawn": 0, "bought": 0, "sold": 0, "fees": 0,
            "halted": False, "updated_at": ts, "version": e.originator_version})

    def _row(self, e: Any, ts: Any) -> dict[str, Any]:
        return self.changed(self.balances, e, ts)

    def _cash(self, entry: str, sign: int) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            row = self._row(e, ts)
            row["cash"] += sign * e.amount
            row["deposited" if sign > 0 else "withdrawn"] += e.amount
            self.ledger.rows.append((ts, seq, row["account_id"], entry, sign * e.amount, 0,
                                     row["cash"], None, None))
        return handle

    def _reserved(self, sign: int) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            self._row(e, ts)["reserved"] += sign * e.amount
        return handle

    def _settled(self, side: str) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            row = self._row(e, ts)
            row["reserved"] -= e.from_reservation
            amount = -(e.notional + e.fee) if side == "buy" else e.notional - e.fee
            row["cash"] += amount
            row["bought" if side == "buy" else "sold"] += e.notional
            row["fees"] += e.fee
            self.ledger.rows.append((ts, seq, row["account_id"], side, amount, e.fee,
                                     row["cash"], str(e.order_id), e.execution_id))
        return handle

    def _halted(self, halted: bool) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            self._row(e, ts)["halted"] = halted
        return handle


class HaltsProjection(Projection):
    """What is halted now: one ``halts`` row per halted symbol or account, removed when
    it resumes. The write side keeps halts in the Market and Account aggregates; the
    query API and console read them here ("nothing reads another stage's memory").

    Rows are written at flush from ``pending`` (key -> row, or None to delete), so a
    halt and its resume inside one batch leave nothing, and nothing is cached between
    batches: the handlers never read a row back."""

    name = "halts"
    tables = ("halts",)
    partitionable = True  # a row per halted symbol (the market's) or account (its own)
    columns = ("kind", "target", "reason", "principal", "halted_at", "seq")

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[tuple[str, str], tuple[Any, ...] | None] = {}
        self.handlers = {
            Market.SymbolHalted: lambda e, seq, ts: self._halted("symbol", e.symbol, e, seq,
                                                                 ts),
            Market.SymbolResumed: lambda e, seq, ts: self._resumed("symbol", e.symbol),
            Account.Halted: lambda e, seq, ts: self._halted("account", str(e.originator_id),
                                                            e, seq, ts),
            Account.Resumed: lambda e, seq, ts: self._resumed("account",
                                                              str(e.originator_id)),
        }

    def _halted(self, kind: str, target: str, e: Any, seq: int, ts: Any) -> None:
        self.pending[(kind, target)] = (kind, target, e.reason, e.principal, ts, seq)

    def _resumed(self, kind: str, target: str) -> None:
        self.pending[(kind, target)] = None

    def flush(self, store: ReadStore) -> None:
        gone = [key for key, row in self.pending.items() if row is None]
        if gone:
            store.executemany("DELETE FROM halts WHERE kind = %s AND target = %s", gone)
        rows = [row for row in self.pending.values() if row is not None]
        if rows:
            names = ", ".join(self.columns)
            store.executemany(
                f"INSERT INTO halts ({names}) VALUES ({', '.join('%s' for _ in self.columns)}) "
                "ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, "
                "principal = excluded.principal, halted_at = excluded.halted_at, "
                "seq = excluded.seq", rows)
        self.pending.clear()

    def load(self, store: ReadStore) -> None:
        store.insert("halts", self.columns, [r for r in self.pending.values() if r is not None])
        self.pending.clear()

    def after_clear(self) -> None:
        self.pending.clear()


SHARE = "#"
"""Separates a projection's name from its share: ``balances#0of2``."""


def share(projection: Projection, index: int, shares: int) -> Projection:
    """``projection`` restricted to the aggregates whose id falls in share ``index`` of
    ``shares`` (``id.int % shares``, the same in every process), under its own name and
    so its own tracking row and fence: ``balances#0of2``. Only for a partitionable one:
    its rows of different shares never meet, so shares projected by different workers
    add up to the whole projection."""
    if not projection.partitionable:
        raise ValueError(f"projection: {projection.name} cannot be split by aggregate "
                         "(its rows combine events of several aggregates)")
    projection.name = f"{projection.name}{SHARE}{index}of{shares}"

    def mine(handler: Callable[[Any, int, Any], None]) -> Callable[[Any, int, Any], None]:
        def handle(e: Any, seq: int, ts: Any) -> None:
            if e.originator_id.int % shares == index:
                handler(e, seq, ts)
        return handle

    projection.handlers = {kind: mine(h) for kind, h in projection.handlers.items()}
    return projection


def all_projections(shares: int | None = None) -> list[Projection]:
    """Every projection; the partitionable ones in ``shares`` shares (default: the
    ``projection_shares`` setting, which every process of a deployment reads alike)."""
    if shares is None:
        from infra.settings import get_settings

        shares = get_settings().projection_shares
    made: list[Projection] = []
    for kind in (OrdersProjection, PositionsProjection, BalancesProjection,
                 HaltsProjection):
        if shares > 1 and kind.partitionable:
            made += [share(kind(), i, shares) for i in range(shares)]
        else:
            made.append(kind())
    return made


class LayoutChanged(ValueError):
    """The read models were projected with other shares than the settings say."""


def check_layout(tracked: Iterable[str], projections: Iterable[Projection]) -> None:
    """Refuse to project onto rows another layout wrote: a tracking row of the same
    family under another name (``balances`` while ``balances#0of2`` is asked for, or
    ``#0of3``) means those tables hold every share's rows up to a position these shares
    know nothing of; only a rebuild can change the layout."""
    names = {p.name for p in projections}
    layout = set(names)  # every share of a split projection belongs, whoever runs it
    for p in projections:
        if p.name != p.family:
            shares = int(p.name.rpartition("of")[2])
            layout |= {f"{p.family}{SHARE}{i}of{shares}" for i in range(shares)}
    families = {p.family for p in projections}
    stray = sorted(t for t in tracked if t.partition(SHARE)[0] in families and t not in layout)
    if stray:
        raise LayoutChanged(
            f"TRADECORE_PROJECTION_SHARES: the read models hold {', '.join(stray)}, "
            f"these settings project {', '.join(sorted(names))}; run `tradecore projections "
            f"rebuild --projection {' --projection '.join(sorted(families))}` first")


def topics_of(projections: Iterable[Projection]) -> list[str]:
    """The stored topics of the events ``projections`` handle (a ``RecorderLog`` filter)."""
    return sorted({get_topic(kind) for p in projections for kind in p.handlers})


def lock_projections(store: ReadStore, names: Iterable[str]) -> None:
    """Inside a read-model transaction: take the batch lock of each named projection,
    held to commit, so two writers of one projection (two projectors, a projector and a
    rebuild) take turns, and writers of different projections do not wait for each
    other (per-projection workers). PostgreSQL: advisory transaction locks, taken in
    name order so two writers of overlapping sets cannot deadlock; SQLite: the write
    lock ``BEGIN IMMEDIATE`` took already serialises every writer."""
    if store.dialect != "postgres":
        return
    for name in sorted(names):
        store.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || "
                      "'/projection/' || %s))", (name,))


class _Overtaken(Exception):
    """The tracked positions moved under this projector: its batch is stale."""


@dataclass(frozen=True)
class Lag:
    name: str
    position: int
    head: int

    @property
    def behind(self) -> int:
        return max(self.head - self.position, 0)


class Projector:
    """Runs projections over the log, one read-model transaction per batch.

    A step of :class:`streams.processor.TrackedProcessor` (``position``, ``start``,
    ``process``); ``run_once``/``catch_up``/``rebuild`` drive it directly (CLI).
    """

    name = "projections"

    def __init__(self, store: ReadStore, log: EventLog, *,
                 projections: Sequence[Projection] | None = None, batch_size: int = 2000
                 ) -> None:
        self.store = store
        self.log = log
        self.projections = list(projections) if projections is not None else all_projections()
        for projection in self.projections:
            projection.store = store
        self.batch_size = batch_size
        self.listeners: list[Callable[[list[Update]], None]] = []
        # Updates cost a copy of every changed row: made only while this says a listener
        # has someone to tell (the API's stream sets it to "any client connected").
        self.wants_updates: Callable[[], bool] = lambda: True
        self._positions: dict[str, int] | None = None
        # Told the position after every committed batch (read-your-writes waits on it).
        self.committed: list[Callable[[int], None]] = []

    # -- where each projection is --------------------------------------------------------
    def positions(self) -> dict[str, int]:
        """Each projection's tracked position: what this projector last wrote, read from
        the database when it has written nothing yet (or dropped its caches).

        Someone else moving them (a rebuild by another process, a second projector) is
        found inside the next batch's transaction (:meth:`_still_at`), which drops the
        caches and reads them again.
        """
        if self._positions is None:
            self._positions = self._stored_positions()
        return dict(self._positions)

    def _stored_positions(self) -> dict[str, int]:
        found = dict(self.store.fetchall("SELECT name, position FROM projection_tracking"))
        check_layout(found, self.projections)
        return {p.name: int(found.get(p.name, 0)) for p in self.projections}

    def position(self, key: str = "", fresh: bool = False) -> int:
        """The notification every projection has reached (what read-your-writes waits on);
        ``fresh`` reads it again from the database (another process may project)."""
        if fresh:
            self._positions = None
        return min(self.positions().values(), default=0)

    def topics(self) -> list[str]:
        """The topics of the events these projections handle (for ``RecorderLog``)."""
        return topics_of(self.projections)

    def status(self) -> list[Lag]:
        head = self.log.head()
        return [Lag(name, pos, head) for name, pos in self.positions().items()]

    # -- running ---------------------------------------------------------------------
    def run_once(self, until: Callable[[int, Any], bool] | None = None) -> int:
        """Project the next batch; returns how many notifications it covered (0: none).

        ``until(seq, event)`` true stops before that event (``rebuild --until``).
        """
        batch = self.log.select(self.position() + 1, self.batch_size)
        if until is not None:
            for i, (seq, event) in enumerate(batch):
                if until(seq, event):
                    batch = batch[:i]
                    break
        if batch:
            self.process("projections", batch)
        return len(batch)

    # -- as a step of the tracked processor (streams.processor) --------------------------
    def start(self, key: str, source: Any) -> None:
        self.reset_caches()

    def process(self, key: str, batch: list[tuple[int, Any]]) -> None:
        """Project ``batch`` (the notifications after :meth:`position`, in order) and
        record each projection's position, in one read-model transaction."""
        positions = self.positions()
        store = self.store
        wanted = bool(self.listeners) and self.wants_updates()
        for projection in self.projections:
            projection.collect_updates = wanted
        try:
            with store.transaction():
                if not self._still_at(positions):
                    raise _Overtaken
                for seq, event in batch:
                    ts = store.ts(event.timestamp)
                    for projection in self.projections:
                        if seq > positions[projection.name]:
                            handler = projection.handlers.get(type(event))
                            if handler is not None:
                                handler(event, seq, ts)
                last = batch[-1][0]
                now = store.ts(datetime.now(UTC))
                for projection in self.projections:
                    projection.flush(store)
                advanced = {name: last for name, pos in positions.items() if pos < last}
                store.executemany(
                    "INSERT INTO projection_tracking (name, position, updated_at) "
                    "VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                    "position = excluded.position, updated_at = excluded.updated_at",
                    [(name, pos, now) for name, pos in advanced.items()])
        except _Overtaken:  # another projector wrote these projections meanwhile
            self.reset_caches()
            return
        except BaseException:
            self.reset_caches()
            raise
        self._positions = positions | advanced
        for hook in self.committed:
            hook(last)
        updates = [u for p in self.projections for u in p.updates]
        for projection in self.projections:
            projection.updates.clear()
        if updates:
            for listener in self.listeners:
                listener(updates)

    def _still_at(self, positions: dict[str, int]) -> bool:
        """Inside the batch's transaction: have the tracked positions stayed put?

        Serialises the writers of each projection (:func:`lock_projections`), so a
        second projector started by mistake (or a rebuild) never applies a batch twice.
        """
        lock_projections(self.store, positions)
        return self._stored_positions() == positions

    def catch_up(self, until: Callable[[int, Any], bool] | None = None) -> int:
        done = 0
        while n := self.run_once(until):
            done += n
        return done

    def rebuild(self, until: Callable[[int, Any], bool] | None = None) -> int:
        """Empty these projections' tables and project the log again from the start
        (whole families: the tables are shared by a projection's shares)."""
        whole_families(self.projections)
        with self.store.transaction():
            for table in dict.fromkeys(t for p in self.projections for t in p.tables):
                self.store.execute(f"DELETE FROM {table}")
            forget_tracking(self.store, self.projections)
        self.reset_caches()
        return self.catch_up(until)

    def reset_caches(self) -> None:
        self._positions = None
        for projection in self.projections:
            projection.clear()


def whole_families(projections: list[Projection]) -> list[Projection]:
    """``projections`` if no share comes without its siblings; else ValueError (their
    tables are shared, so a rebuild empties and fills every share of a projection)."""
    for family in dict.fromkeys(p.family for p in projections):
        names = [p.name for p in projections if p.family == family]
        if names != [family]:
            shares = int(names[0].rpartition("of")[2]) if SHARE in names[0] else 0
            if len(names) != shares:
                raise ValueError(f"projection: {', '.join(names)} is part of {family}; "
                                 f"name {family} to rebuild all its shares together")
    return projections


def forget_tracking(store: ReadStore, projections: Iterable[Projection]) -> None:
    """Delete the tracking rows of these projections' families, whatever shares wrote
    them (a rebuild changes the layout to the settings' one)."""
    for family in dict.fromkeys(p.family for p in projections):
        store.execute("DELETE FROM projection_tracking WHERE name = %s OR name LIKE %s",
                      (family, f"{family}{SHARE}%"))


def select(projections: Iterable[Projection], names: Iterable[str] | None) -> list[Projection]:
    """The projections named (all when ``names`` is empty): a share by its name
    (``balances#0of2``), or a projection with all its shares (``balances``); unknown
    names are an error."""
    chosen = list(projections)
    wanted = list(names or [])
    if not wanted:
        return chosen
    known = {p.name: [p] for p in chosen}
    for p in chosen:
        if p.family != p.name:
            known.setdefault(p.family, []).append(p)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"projection: unknown {', '.join(unknown)}; "
                         f"one of {', '.join(known)}")
    return list(dict.fromkeys(p for n in wanted for p in known[n]))


def until_time(moment: datetime) -> Callable[[int, Any], bool]:
    return lambda seq, event: bool(event.timestamp > moment)


def until_position(position: int) -> Callable[[int, Any], bool]:
    return lambda seq, event: seq > position

