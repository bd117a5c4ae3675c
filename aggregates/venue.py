"""What the venue publishes: one ``Venue.Reported`` event per venue command it handled.

The matching stage (:mod:`streams.matching`) consumes venue commands (the routed order
events and the session close) in order, runs the engine, and stores one ``Reported``
event per command on the symbol's venue stream (``ids.venue_id(symbol)``), together
with the tracking record of its input position. The saga consumes these reports to
fill, cancel, expire and amend orders; projections read the last price and the book
depth from them. Nobody reaches into the engine object.

Reports are plain JSON-friendly dicts (order ids as canonical UUID strings):

- ``{"kind": "fill", "execution_id", "price", "quantity", "taker", "maker"}``: both
  order ids; the execution id derives from (symbol, input sequence, fill index), so a
  replay of the same inputs reproduces it and consumers drop duplicates. A fill
  against liquidity from outside the system (a backtest's bar, see
  ``Market.BarsOpened``) has ``None`` for that side and ``"external": true``;
- ``{"kind": "external", "session_date", "bid": [price, quantity], "ask": [price,
  quantity]}``: the outside liquidity a session's bar put on the book (``command``
  ``"open"``), replacing the previous session's (a side of quantity 0 offers nothing);
  the session close takes it off again without a report;
- ``{"kind": "removed", "order_id", "quantity", "reason", "expired"}``: quantity taken
  off the book or never rested (IOC/FOK/market remainder, cancel, session expiry);
- ``{"kind": "amended", "order_id", "quantity", "price", "priority_kept"}``: the new
  total quantity and price the venue accepted;
- ``{"kind": "refused", "order_id", "action", "reason"}``: the venue did not do what it
  was asked (``action``: ``new`` | ``cancel`` | ``amend``), e.g. the order was gone.

``depth`` (top levels a side, ``{"bids": [[price, quantity, orders], ...], "asks": ...}``)
is published on the last report of a symbol in each batch the stage commits; ``None``
otherwise.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aggregates.base import TradingAggregate


class Venue(TradingAggregate):
    """The venue's stream for one symbol. Only the matching stage writes it; nothing
    needs to load it (its state is the engine's book, snapshotted by the stage)."""

    class Reported(TradingAggregate.Event):
        """What the venue did with one command: fills, removals, amends or refusals."""

        symbol: str
        sequence: int  # the engine's input sequence for the symbol after this command
        command: str  # "new" | "cancel" | "amend" | "expire" | "open"
        order_id: UUID | None  # the order the command was about (None: a session close/open)
        reports: list[dict[str, Any]]
        last_price: int | None  # the symbol's last trade price after this command
        depth: dict[str, Any] | None

        def apply(self, venue: Venue) -> None:  # pragma: no cover - never loaded
            pass
