"""Venue command events as the saga stores them, for the matching stage's tests and
benchmark: ``Order.Routed`` / ``CancelRouted`` / ``AmendRouted`` / ``ExpiryRouted`` and
``Market.SessionClosed``, with real originator versions and metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from aggregates import ids
from aggregates.market import Market
from aggregates.order import Order

T0 = datetime(2024, 6, 3, 0, 0, tzinfo=UTC)
ACCOUNT = ids.account_id("venue-tests")


def order_uuid(key: int | str) -> UUID:
    return uuid5(NAMESPACE_URL, f"venue-test-order/{key}")


class Flow:
    """Builds venue command events; each order's events carry versions 1, 2, ..."""

    def __init__(self) -> None:
        self.versions: dict[UUID, int] = {}
        self.market_version = 1

    def _meta(self, oid: UUID) -> dict[str, Any]:
        version = self.versions.get(oid, 2) + 1  # Placed = 1, Accepted = 2
        self.versions[oid] = version
        return {
            "originator_id": oid, "originator_version": version, "timestamp": T0,
            "principal": "saga:orders", "command_id": f"route:{oid}:{version}",
            "correlation_id": f"cmd-{oid.hex[:8]}", "causation_id": f"{oid}:{version - 1}",
        }

    def routed(self, key: int | str, symbol: str, side: str, quantity: int, price: int, *,
               order_type: str = "limit", tif: str = "day", owner: int = 7) -> Order.Routed:
        oid = order_uuid(key)
        return Order.Routed(  # type: ignore[call-arg]
            **self._meta(oid), account_id=ACCOUNT, symbol=symbol, side=side,
            order_type=order_type, tif=tif, quantity=quantity, price=price,
            engine_order_id=ids.engine_id(oid), owner=owner,
        )

    # symbol=None is how version-1 events (before they named the book) read
    def cancel(self, key: int | str, symbol: str | None = None) -> Order.CancelRouted:
        oid = order_uuid(key)
        return Order.CancelRouted(  # type: ignore[call-arg]
            **self._meta(oid), engine_order_id=ids.engine_id(oid), symbol=symbol)

    def expiry(self, key: int | str, symbol: str | None = None) -> Order.ExpiryRouted:
        oid = order_uuid(key)
        return Order.ExpiryRouted(  # type: ignore[call-arg]
            **self._meta(oid), engine_order_id=ids.engine_id(oid), symbol=symbol)

    def amend(self, key: int | str, quantity: int, price: int,
              symbol: str | None = None) -> Order.AmendRouted:
        oid = order_uuid(key)
        return Order.AmendRouted(  # type: ignore[call-arg]
            **self._meta(oid), engine_order_id=ids.engine_id(oid), quantity=quantity,
            price=price, reserved_funds=0, symbol=symbol)

    def close(self, session_date: str = "2024-06-03") -> Market.SessionClosed:
        self.market_version += 1
        return Market.SessionClosed(  # type: ignore[call-arg]
            originator_id=ids.MARKET_ID, originator_version=self.market_version, timestamp=T0,
            principal="ops", command_id=f"close:{session_date}",
            correlation_id=f"close:{session_date}", causation_id=f"close:{session_date}",
            session_date=session_date,
        )


class ListSource:
    """``Source.read`` over a list of ``(position, event)`` (positions ascending)."""

    name = "trading"
    partition = 0

    def __init__(self, items: list[tuple[int, Any]]) -> None:
        self.items = items
        self.reads = 0

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        self.reads += 1
        out = [item for item in self.items if item[0] > after]
        return out[:limit]

    def head(self) -> int:
        return self.items[-1][0] if self.items else 0

    def wait(self, timeout: float) -> None:
        return None
