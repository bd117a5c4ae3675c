"""Broker commissions on executed orders, in whole yen, consumption tax included.

A commission is a cost that settlement debits from cash, so it must be an exact integer:
``cash = deposits - withdrawals - costs + proceeds`` only holds if every fee is computed
the same way on replay. Schedules therefore use integer arithmetic only, and the rounding
rule of each schedule is part of its definition (documented in ``docs/instruments.md``).

The schedule is chosen by the ``commission_schedule`` setting; ``get_schedule`` turns the
name into a schedule. Fees are per order (the notional of the order's executions on one
trading day, as Japanese online brokers charge), computed by the caller's settlement flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol, runtime_checkable


def _check_notional(notional_yen: int) -> int:
    if isinstance(notional_yen, bool) or not isinstance(notional_yen, int):
        raise ValueError(
            f"notional_yen {notional_yen!r} must be an int number of yen (rule: integer)"
        )
    if notional_yen < 0:
        raise ValueError(f"notional_yen {notional_yen} must be >= 0 (rule: non_negative)")
    return notional_yen


@runtime_checkable
class CommissionSchedule(Protocol):
    """What settlement needs: a name for audit and the fee for a notional."""

    @property
    def name(self) -> str: ...

    def commission(self, notional_yen: int) -> int:
        """Tax-inclusive commission in yen for an order of ``notional_yen``."""
        ...


@dataclass(frozen=True, slots=True)
class TieredCommission:
    """Per-order fee by notional band: ``tiers`` are (notional up to and including X yen,
    fee Y yen), ascending; above the last X the fee is ``above``.

    A notional of 0 means nothing was executed, so no fee is charged.
    """

    name: str
    tiers: tuple[tuple[int, int], ...]
    above: int

    def __post_init__(self) -> None:
        previous = 0
        for upper, fee in self.tiers:
            if not (isinstance(upper, int) and isinstance(fee, int)):
                raise ValueError(f"{self.name}: tier ({upper!r}, {fee!r}) must be ints")
            if upper <= previous:
                raise ValueError(
                    f"{self.name}: tier upper bounds must be positive and strictly "
                    f"ascending, got {upper} after {previous}"
                )
            if fee < 0:
                raise ValueError(f"{self.name}: tier fee {fee} must be >= 0")
            previous = upper
        if not isinstance(self.above, int) or self.above < 0:
            raise ValueError(f"{self.name}: fee above the last tier {self.above!r} must be >= 0")

    def commission(self, notional_yen: int) -> int:
        notional = _check_notional(notional_yen)
        if notional == 0:
            return 0
        for upper, fee in self.tiers:
            if notional <= upper:
                return fee
        return self.above


@dataclass(frozen=True, slots=True)
class RateCommission:
    """Percentage fee: ``floor(notional * bps / 10_000)`` in integer arithmetic, then
    clamped to ``[minimum, maximum]`` (``maximum=None``: no cap). Tax included.

    A notional of 0 means nothing was executed, so no fee is charged (not even the
    minimum).
    """

    name: str
    bps: int
    minimum: int = 0
    maximum: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.bps, int) or self.bps < 0:
            raise ValueError(f"{self.name}: bps {self.bps!r} must be an int >= 0")
        if not isinstance(self.minimum, int) or self.minimum < 0:
            raise ValueError(f"{self.name}: minimum {self.minimum!r} must be an int >= 0")
        if self.maximum is not None and (
            not isinstance(self.maximum, int) or self.maximum < self.minimum
        ):
            raise ValueError(
                f"{self.name}: maximum {self.maximum!r} must be an int >= minimum {self.minimum}"
            )

    def commission(self, notional_yen: int) -> int:
        notional = _check_notional(notional_yen)
        if notional == 0:
            return 0
        fee = max(notional * self.bps // 10_000, self.minimum)
        return fee if self.maximum is None else min(fee, self.maximum)


TIERED_ONLINE: Final = TieredCommission(
    name="tiered_online",
    # A Japanese online broker's per-trade ("1注文ごと") tiered plan, tax included.
    tiers=(
        (50_000, 55),
        (100_000, 99),
        (200_000, 115),
        (500_000, 275),
        (1_000_000, 535),
        (1_500_000, 640),
        (30_000_000, 1_013),
    ),
    above=1_070,
)

FLAT_10BP: Final = RateCommission(name="flat_10bp", bps=10, minimum=0, maximum=None)

ZERO: Final = RateCommission(name="zero", bps=0)
"""Most Japanese online brokers have charged nothing on domestic stocks since 2023."""

DEFAULT_SCHEDULE: Final[str] = "tiered_online"

SCHEDULES: Final[Mapping[str, CommissionSchedule]] = MappingProxyType(
    {schedule.name: schedule for schedule in (TIERED_ONLINE, FLAT_10BP, ZERO)}
)


def get_schedule(name: str) -> CommissionSchedule:
    """The schedule named by the ``commission_schedule`` setting."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SCHEDULES))
        raise ValueError(
            f"commission_schedule {name!r} is not a known schedule (known: {known})"
        ) from None
