"""Per-order holds: yen held on an Account, shares held on a Position.

Both aggregates keep what each open order holds and the total, and take holds down as
fills consume them or the saga releases them; this is that bookkeeping, once.
"""

from __future__ import annotations

from uuid import UUID


class Holds:
    reservations: dict[str, int]
    reserved: int

    def _init_holds(self) -> None:
        self.reservations = {}
        self.reserved = 0

    def reserved_for(self, order_id: UUID) -> int:
        return self.reservations.get(str(order_id), 0)

    def _hold(self, order_id: UUID, amount: int) -> None:
        key = str(order_id)
        self.reservations[key] = self.reservations.get(key, 0) + amount
        self.reserved += amount

    def _take_hold(self, order_id: UUID, amount: int) -> None:
        key = str(order_id)
        left = self.reservations.get(key, 0) - amount
        if left > 0:
            self.reservations[key] = left
        else:
            self.reservations.pop(key, None)
        self.reserved -= amount
