"""A small desk for tests: accounts with cash and shares, and notification counting."""

from __future__ import annotations

from itertools import count
from uuid import UUID

from aggregates.application import Placement, TradingApplication
from aggregates.base import Meta
from aggregates.instruments import Universe
from streams.embedded import in_process

_ids = count(1)


def meta(principal: str = "tester") -> Meta:
    return Meta.command(principal)


def make_app(env: dict[str, str], universe: Universe, *, engine: str = "kernel",
             saga_batch_size: int = 256, **kwargs: object) -> TradingApplication:
    """The write model with its stages run in the caller's thread after every command,
    so a test sees everything an order set off once the command returns."""
    app = TradingApplication(env, universe=universe, **kwargs)  # type: ignore[arg-type]
    in_process(app, engine=engine, saga_batch_size=saga_batch_size)
    return app


def funded(app: TradingApplication, name: str, cash: int = 50_000_000,
           allow_short: bool = False) -> UUID:
    account = app.open_account(name, owner=name, meta=meta(name), allow_short=allow_short)
    if cash:
        app.deposit(account, cash, meta(name))
    return account


def place(app: TradingApplication, account: UUID, symbol: str, side: str, qty: int,
          price: int = 0, **kwargs: object) -> Placement:
    return app.place_order(account, client_order_id=f"c{next(_ids)}", symbol=symbol, side=side,
                           quantity=qty, price=price, meta=meta(), **kwargs)  # type: ignore[arg-type]


def stored(app: TradingApplication) -> int:
    return app.recorder.max_notification_id() or 0


def give_shares(app: TradingApplication, seller: UUID, symbol: str, qty: int, price: int
                ) -> None:
    """Buy ``qty`` for ``seller`` from a fresh short-enabled market maker."""
    maker = funded(app, f"mm{next(_ids)}", 10_000_000_000, allow_short=True)
    place(app, maker, symbol, "sell", qty, price)
    place(app, seller, symbol, "buy", qty, price)
