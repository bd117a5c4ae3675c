"""Deterministic identities.

Ids derived from business keys make commands idempotent (opening the same account or
placing the same client order id twice finds the existing aggregate) and let any
process find an aggregate without a lookup table.
"""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID, uuid5

_NAMESPACE = UUID("6f1d3c2e-8a44-4f0b-9a1e-2b7c5d9e0a11")


def account_id(name: str) -> UUID:
    return uuid5(_NAMESPACE, f"account/{name}")


def account_ref(name_or_id: str) -> UUID:
    """An account by its id, or by the name it was opened with (its id derives from
    the name): how people name accounts on the command line."""
    try:
        return UUID(name_or_id)
    except ValueError:
        return account_id(name_or_id)


def order_id(account: UUID, client_order_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"order/{account}/{client_order_id}")


@lru_cache(maxsize=1 << 16)
def position_id(account: UUID, symbol: str) -> UUID:
    return uuid5(_NAMESPACE, f"position/{account}/{symbol}")


MARKET_ID = uuid5(_NAMESPACE, "market")


def engine_id(aggregate_id: UUID) -> int:
    """A positive int64 for the matching engine (top 63 bits of the UUID)."""
    return aggregate_id.int >> 65


@lru_cache(maxsize=1 << 12)
def venue_id(symbol: str) -> UUID:
    """The venue's report stream for one symbol (see :mod:`aggregates.venue`)."""
    return uuid5(_NAMESPACE, f"venue/{symbol}")


def external_liquidity_id(symbol: str, session_date: str, side: str) -> UUID:
    """The venue's resting order for the outside world's liquidity on one side of one
    symbol's book in one session (backtests: see ``Market.BarsOpened``)."""
    return uuid5(_NAMESPACE, f"external/{symbol}/{session_date}/{side}")
