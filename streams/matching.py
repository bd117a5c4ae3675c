"""INTERIM matching stage (replaced by the venue helper's): the old desk behind the
stage interface, no snapshots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aggregates import ids
from aggregates.instruments import Instrument
from aggregates.matching import (
    AmendReport,
    Execution,
    MatchingDesk,
    Refusal,
    Removal,
    Report,
)
from aggregates.venue import Venue
from kernels.contract import Engine


def make_engine(name: str) -> Engine:
    if name == "reference":
        from kernels.reference import ReferenceEngine

        return ReferenceEngine()
    if name == "kernel":
        from kernels.engine import KernelEngine

        return KernelEngine()
    raise ValueError(f"matching_engine={name!r}: expected 'reference' or 'kernel'")


def venue_snapshots(settings: Any) -> None:
    return None


_TOPICS = ("Order.Routed", "Order.CancelRouted", "Order.AmendRouted", "Order.ExpiryRouted")


class MatchingStage:
    name = "matching"
    topics: Sequence[str] = (*(f"aggregates.order:{t}" for t in _TOPICS),
                             "aggregates.market:Market.SessionClosed")

    def __init__(self, engine: Engine, instrument: Callable[[str], Instrument],
                 snapshots: Any = None, *, snapshot_every: int = 10_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._engine_type = type(engine)
        self.instrument = instrument
        self.clock = clock
        self.desk = MatchingDesk(engine, instrument)
        self.versions: dict[str, int] = {}

    def start(self, tracked: int, source: Any) -> None:
        self.desk = MatchingDesk(self._engine_type(), self.instrument)
        self.versions = {}
        after = 0
        while after < tracked:
            batch = [(p, e) for p, e in source.read(after, 1000) if p <= tracked]
            if not batch:
                break
            self.apply(batch)
            after = batch[-1][0]

    def apply(self, batch: list[tuple[int, Any]]) -> list[Any]:
        out: list[Any] = []
        last_of: dict[str, int] = {}
        for _, e in batch:
            kind = type(e).__qualname__
            if kind == "Market.SessionClosed":
                by_symbol: dict[str, list[Report]] = {}
                for t in list(self.desk.open_day_orders()):
                    for r in self.desk.cancel(t.engine_id, expire=True):
                        by_symbol.setdefault(t.symbol, []).append(r)
                for symbol, reports in sorted(by_symbol.items()):
                    last_of[symbol] = len(out)
                    out.append(self._event(e, symbol, "expire", None, reports))
                continue
            if kind == "Order.Routed":
                reports = self.desk.new(
                    order_id=e.originator_id, account_id=e.account_id, symbol=e.symbol,
                    side=e.side, order_type=e.order_type, tif=e.tif, quantity=e.quantity,
                    price=e.price, engine_order_id=e.engine_order_id, owner=e.owner)
                symbol, command = e.symbol, "new"
            else:
                ticket = self.desk.tickets.get(e.engine_order_id)
                command = {"Order.CancelRouted": "cancel", "Order.ExpiryRouted": "expire",
                           "Order.AmendRouted": "amend"}[kind]
                if ticket is None:
                    out.append(self._refused(e, command))
                    continue
                symbol = ticket.symbol
                if command == "amend":
                    reports = self.desk.amend(e.engine_order_id, e.quantity, e.price)
                else:
                    reports = self.desk.cancel(e.engine_order_id, expire=command == "expire")
            last_of[symbol] = len(out)
            out.append(self._event(e, symbol, command, e.originator_id, reports))
        for symbol, index in last_of.items():
            depth = self.desk.depth(symbol, 10)
            ev = out[index]
            object.__setattr__(ev, "depth", {
                "bids": [[lv.price, lv.quantity, lv.orders] for lv in depth.bids],
                "asks": [[lv.price, lv.quantity, lv.orders] for lv in depth.asks]})
        return out

    def _refused(self, e: Any, command: str) -> Any:
        # a cancel/amend of an order the venue no longer has; symbol unknown here
        order_symbol = getattr(e, "symbol", None) or "?"
        return self._event(e, order_symbol, command, e.originator_id, [], refused=True)

    def _event(self, e: Any, symbol: str, command: str, order_id: Any, reports: list[Report],
               refused: bool = False) -> Any:
        version = self.versions.get(symbol, 0) + 1
        self.versions[symbol] = version
        cause = f"{e.originator_id}:{e.originator_version}"
        dicts = [_as_dict(r) for r in reports]
        if refused:
            dicts = [{"kind": "refused", "order_id": str(order_id), "action":
                      "cancel" if command in ("cancel", "expire") else command,
                      "reason": "unknown_order"}]
        return Venue.Reported(
            originator_id=ids.venue_id(symbol), originator_version=version,
            timestamp=self.clock(), principal="venue", command_id=f"match:{cause}",
            correlation_id=e.correlation_id, causation_id=cause, symbol=symbol,
            sequence=0, command=command, order_id=order_id, reports=dicts,
            last_price=self.desk.last_price(symbol), depth=None)

    def committed(self, position: int) -> None:
        pass


def _as_dict(r: Report) -> dict[str, Any]:
    if isinstance(r, Execution):
        return {"kind": "fill", "execution_id": r.execution_id, "price": r.price,
                "quantity": r.quantity, "taker": str(r.taker.order_id),
                "maker": str(r.maker.order_id)}
    if isinstance(r, Removal):
        return {"kind": "removed", "order_id": str(r.ticket.order_id), "quantity": r.quantity,
                "reason": r.reason, "expired": r.expired}
    if isinstance(r, AmendReport):
        return {"kind": "amended", "order_id": str(r.ticket.order_id), "quantity": r.quantity,
                "price": r.price, "priority_kept": r.priority_kept}
    assert isinstance(r, Refusal)
    return {"kind": "refused", "order_id": str(r.ticket.order_id), "action": r.action,
            "reason": r.reason}
