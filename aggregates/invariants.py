"""The write model's invariants, checked from stored state (demo, tests, audits).

Each check returns a :class:`Check` with a name a desk would recognise, whether it
held, and a detail line. Nothing here changes state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

from aggregates.account import Account
from aggregates.application import TradingApplication
from aggregates.order import Order, Side


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_invariants(app: TradingApplication) -> list[Check]:
    """Every invariant over every account and order in the store."""
    accounts: list[Account] = [app.get_account(a) for a in app.ids_of(Account)]
    orders: list[Order] = [app.get_order(o) for o in app.ids_of(Order)]
    checks: list[Check] = []

    def add(name: str, bad: list[str], total: int) -> None:
        checks.append(Check(name, not bad, "; ".join(bad[:3]) or f"{total} checked"))

    add("cash = deposits - withdrawals - bought - fees + sold",
        [f"{a.name}: {a.cash} != {a.deposited - a.withdrawn - a.bought - a.fees + a.sold}"
         for a in accounts
         if a.cash != a.deposited - a.withdrawn - a.bought - a.fees + a.sold], len(accounts))
    add("0 <= reserved <= cash",
        [f"{a.name}: reserved {a.reserved}, cash {a.cash}" for a in accounts
         if not 0 <= a.reserved <= a.cash], len(accounts))
    add("reserved = sum of open orders' reservations",
        [f"{a.name}: {a.reserved} != {sum(a.reservations.values())}" for a in accounts
         if a.reserved != sum(a.reservations.values())], len(accounts))
    by_id = {o.id: o for o in orders}
    add("final orders hold no reservation",
        [f"order {oid} ({by_id[UUID(oid)].status.value}) holds {amt} yen"
         for a in accounts for oid, amt in a.reservations.items()
         if UUID(oid) in by_id and by_id[UUID(oid)].is_final], len(orders))
    add("filled <= ordered",
        [f"{o.client_order_id}: {o.filled_quantity} > {o.quantity}" for o in orders
         if not 0 <= o.filled_quantity <= o.quantity], len(orders))

    signed: dict[tuple[UUID, str], int] = defaultdict(int)
    for o in orders:
        signed[(o.account_id, o.symbol)] += (
            o.filled_quantity if o.side is Side.BUY else -o.filled_quantity)
    bad_positions = []
    for (account_id, symbol), qty in signed.items():
        position = app.get_position(account_id, symbol)
        held = position.quantity if position else 0
        if held != qty:
            bad_positions.append(f"{symbol}: position {held} != fills {qty}")
    add("position = sum of fills", bad_positions, len(signed))

    bought = sum(a.bought for a in accounts)
    sold = sum(a.sold for a in accounts)
    add("bought = sold (every trade has two sides)",
        [f"{bought} != {sold}"] if bought != sold else [], len(accounts))
    total_cash = sum(a.cash for a in accounts)
    expected = sum(a.deposited - a.withdrawn - a.fees for a in accounts)
    add("cash conserved across accounts",
        [f"{total_cash} != {expected}"] if total_cash != expected else [], len(accounts))

    crossed = []
    for symbol in {o.symbol for o in orders}:
        depth, _ = app.book(symbol, 1)  # as the venue last published it
        bids, asks = depth["bids"], depth["asks"]
        if bids and asks and bids[0][0] >= asks[0][0]:
            crossed.append(f"{symbol}: bid {bids[0][0]} >= ask {asks[0][0]}")
    add("no crossed book", crossed, len({o.symbol for o in orders}))
    return checks
