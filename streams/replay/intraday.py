"""Intraday backtest: a TWAP buyer or a passive market maker against a replayed LOBSTER day.

The driver around :func:`kernels.intraday.intraday_kernel` (whose docstring, and
``docs/backtests.md`` "Intraday", state the simulation model): it validates an agent's
configuration, turns it into the kernel's integer schedule (child times and quantities,
or requote times), runs the day in one kernel call and reduces the fills to a report:
fills, slippage against arrival price, time in queue, the unfilled remainder, and the
maker's PnL and inventory path.

Nothing here reads the clock or a random source: the same file and configuration give
the same report, byte for byte (timing lives in ``benchmarks/intraday.py``).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from kernels.intraday import (
    AGENT_COUNTER_NAMES,
    F_ARRIVAL,
    F_INVENTORY,
    F_PRICE,
    F_QTY,
    F_QUEUE_NS,
    F_RULE,
    F_SIDE,
    F_TIME_NS,
    FILL_FIELDS,
    MODE_MAKER,
    MODE_TWAP,
    P_END_NS,
    P_HALF_SPREAD,
    P_INVENTORY_LIMIT,
    P_LIMIT_TICKS,
    P_MODE,
    P_SIDE,
    P_SIZE,
    P_TICK,
    PARAM_FIELDS,
    QUOTE_FIELDS,
    RULE_NAMES,
    RULE_TAKE,
    intraday_kernel,
    submission_index,
)
from kernels.lobster import COUNTER_NAMES, LOBSTER_TICK, new_book, replay_buffers
from kernels.matching import book_tuple
from streams.replay.lobster import LobsterDay

PRICE_SCALE = 10_000  # LOBSTER prices: dollars x 10,000
NS = 1_000_000_000
TAKEN_LEVELS = 64  # price levels a TWAP may hold "already taken" at once
_SESSION_IN_NAME = re.compile(r"_(\d{8})_(\d{8})_")  # LOBSTER: _<start ms>_<end ms>_


# bounds that keep a run's arrays and int64 arithmetic (price x shares) small and exact
MAX_SHARES = 10**9
MAX_HALF_SPREAD_TICKS = 10**6
MIN_INTERVAL_S = 1.0  # TWAP: one child per second at most (fill rows: children x levels)
MIN_REQUOTE_S = 0.01  # maker: 2.34 M requotes in a 6.5-hour day at most


class IntradayConfigError(ValueError):
    """An agent configuration the backtest refuses: the field (as the CLI option names it,
    without dashes) and the rule it broke."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class TwapConfig:
    """Buy (or sell) ``quantity`` shares in equal slices, one child every ``interval_s``
    from ``start`` to ``end`` (seconds after midnight), each a marketable limit IOC
    priced ``limit_ticks`` ticks through the best opposite price."""

    quantity: int = 20_000
    side: int = 1
    start: float = 34_200.0
    end: float = 57_600.0
    interval_s: float = 300.0
    limit_ticks: int = 5


@dataclass(frozen=True)
class MakerConfig:
    """Quote ``size`` shares each side at mid -/+ ``half_spread_ticks`` (never inside the
    touch), requoting every ``requote_s``, within +/- ``inventory_limit`` shares."""

    half_spread_ticks: int = 1
    size: int = 100
    inventory_limit: int = 1_000
    requote_s: float = 1.0
    start: float = 34_200.0
    end: float = 57_600.0


AgentConfig = TwapConfig | MakerConfig


def session_bounds(day: LobsterDay) -> tuple[float, float]:
    """The day's session in seconds after midnight: from the LOBSTER file name
    (``..._34200000_57600000_...``, milliseconds), else the first and last message."""
    found = _SESSION_IN_NAME.search(day.name)
    if found:
        return int(found.group(1)) / 1000, int(found.group(2)) / 1000
    return math.floor(float(day.times[0])), math.ceil(float(day.times[-1]))


def parse_clock(value: str, field: str) -> float:
    """``HH:MM`` or ``HH:MM:SS`` (or plain seconds after midnight) as seconds."""
    text = value.strip()
    try:
        if ":" not in text:
            return float(text)
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise IntradayConfigError(field, f"{value!r} is not a time (HH:MM[:SS])") from None
    in_range = 0 <= parts[0] < 24 and all(0 <= p < 60 for p in parts[1:])
    if len(parts) not in (2, 3) or not in_range:
        raise IntradayConfigError(field, f"{value!r} is not a time (HH:MM[:SS])")
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def validate(config: AgentConfig, day: LobsterDay) -> None:
    """Refuse a configuration the model cannot honour, naming the field and the rule."""
    first, last = session_bounds(day)
    session = f"the data's session {_clock(first)}-{_clock(last)}"
    if not first <= config.start <= last:
        raise IntradayConfigError("start", f"{_clock(config.start)} is outside {session}")
    if not first <= config.end <= last:
        raise IntradayConfigError("end", f"{_clock(config.end)} is outside {session}")
    if config.end <= config.start:
        raise IntradayConfigError(
            "end", f"{_clock(config.end)} must be after start {_clock(config.start)}"
        )
    if isinstance(config, TwapConfig):
        _shares("quantity", config.quantity)
        if config.side not in (1, -1):
            raise IntradayConfigError("side", f"must be buy (1) or sell (-1), got {config.side}")
        if not (math.isfinite(config.interval_s) and config.interval_s >= MIN_INTERVAL_S):
            raise IntradayConfigError(
                "interval", f"must be >= {MIN_INTERVAL_S:g} seconds, got {config.interval_s}"
            )
        if not 0 <= config.limit_ticks < day.levels:
            raise IntradayConfigError(
                "limit_ticks",
                f"must be 0..{day.levels - 1} (a child sees only the file's "
                f"{day.levels} levels), got {config.limit_ticks}",
            )
        return
    _shares("size", config.size)
    _shares("inventory_limit", config.inventory_limit)
    if not 0 <= config.half_spread_ticks <= MAX_HALF_SPREAD_TICKS:
        raise IntradayConfigError(
            "half_spread_ticks",
            f"must be 0..{MAX_HALF_SPREAD_TICKS:,}, got {config.half_spread_ticks}",
        )
    if config.inventory_limit < config.size:
        raise IntradayConfigError(
            "inventory_limit", f"must be >= size ({config.size}), got {config.inventory_limit}"
        )
    if not (math.isfinite(config.requote_s) and config.requote_s >= MIN_REQUOTE_S):
        raise IntradayConfigError(
            "requote", f"must be >= {MIN_REQUOTE_S:g} seconds, got {config.requote_s}"
        )


def _shares(field: str, value: int) -> None:
    if not 0 < value <= MAX_SHARES:
        raise IntradayConfigError(field, f"must be 1..{MAX_SHARES:,} shares, got {value}")


def _ns(seconds: float) -> int:
    return round(seconds * NS)


def twap_slices(quantity: int, children: int) -> list[int]:
    """``children`` slices of ``quantity`` that differ by at most one share and sum to it."""
    return [quantity * (j + 1) // children - quantity * j // children for j in range(children)]


def schedule_for(config: AgentConfig) -> np.ndarray:
    """The kernel's ``int64[k, 2]`` action rows: (time_ns, quantity)."""
    start, end = _ns(config.start), _ns(config.end)
    if isinstance(config, TwapConfig):
        step = max(1, _ns(config.interval_s))
        children = max(1, -(-(end - start) // step))
        rows = np.zeros((children, 2), dtype=np.int64)
        rows[:, 0] = start + step * np.arange(children, dtype=np.int64)
        rows[:, 1] = twap_slices(config.quantity, children)
        return rows
    step = max(1, _ns(config.requote_s))
    times = np.append(np.arange(start, end, step, dtype=np.int64), end)  # last: withdraw
    rows = np.zeros((times.size, 2), dtype=np.int64)
    rows[:, 0] = times
    return rows


def params_for(config: AgentConfig) -> np.ndarray:
    params = np.zeros(PARAM_FIELDS, dtype=np.int64)
    params[P_TICK] = LOBSTER_TICK
    params[P_END_NS] = _ns(config.end)
    if isinstance(config, TwapConfig):
        params[P_MODE] = MODE_TWAP
        params[P_SIDE] = config.side
        params[P_LIMIT_TICKS] = config.limit_ticks
    else:
        params[P_MODE] = MODE_MAKER
        params[P_HALF_SPREAD] = config.half_spread_ticks * LOBSTER_TICK
        params[P_SIZE] = config.size
        params[P_INVENTORY_LIMIT] = config.inventory_limit
    return params


def times_ns(day: LobsterDay) -> np.ndarray:
    """Message times as integer nanoseconds after midnight (LOBSTER gives nanoseconds)."""
    return np.round(day.times * NS).astype(np.int64)


@dataclass(frozen=True)
class IntradayResult:
    config: AgentConfig
    day: LobsterDay
    replay_counts: dict[str, int]
    agent: dict[str, int]
    fills: np.ndarray  # int64[f, FILL_FIELDS], in time order
    schedule: np.ndarray
    seconds: float


def run(day: LobsterDay, config: AgentConfig) -> IntradayResult:
    """Replay ``day`` with one agent acting; one kernel call."""
    validate(config, day)
    schedule = schedule_for(config)
    params = params_for(config)
    maker = isinstance(config, MakerConfig)
    arrays = new_book(day.messages, day.levels)
    ev, counts, flags = replay_buffers(arrays, day.messages)
    quotes = np.zeros((2, QUOTE_FIELDS), dtype=np.int64)
    taken = np.zeros((TAKEN_LEVELS, 2), dtype=np.int64)
    # a message fills at most one quote; a child at most one fill per visible level
    capacity = day.messages.shape[0] if maker else schedule.shape[0] * day.levels
    fills = np.zeros((capacity + 16, FILL_FIELDS), dtype=np.int64)
    agent = np.zeros(len(AGENT_COUNTER_NAMES), dtype=np.int64)
    started = time.perf_counter()
    # only the maker's queue rule 4 reads the submission stamps
    stamps = submission_index(day.messages) if maker else np.zeros(0, dtype=np.int64)
    intraday_kernel(book_tuple(arrays), ev, day.messages, times_ns(day), day.orderbook, counts,
                    flags, stamps, params, schedule, quotes, taken, fills, agent)  # fmt: skip
    seconds = time.perf_counter() - started
    agent_counts = {name: int(agent[i]) for i, name in enumerate(AGENT_COUNTER_NAMES)}
    if agent_counts["taken_overflow"]:
        raise RuntimeError(f"taken levels: more than {TAKEN_LEVELS} prices held at once")
    return IntradayResult(
        config=config,
        day=day,
        replay_counts={name: int(counts[i]) for i, name in enumerate(COUNTER_NAMES)},
        agent=agent_counts,
        fills=fills[: agent_counts["fills"]].copy(),
        schedule=schedule,
        seconds=seconds,
    )


def _dollars(units: float) -> float:
    return round(units / PRICE_SCALE, 6)


def _slippage(fills: np.ndarray) -> dict[str, float | int] | None:
    """Quantity-weighted cost of each fill against its own order's arrival mid (a TWAP
    child's mid when sent, a quote's mid when placed): > 0 paid (a buy above the mid, a
    sell below it), < 0 earned. Fills whose book had no mid on arrival are left out."""
    priced = fills[fills[:, F_ARRIVAL] > 0]
    qty = priced[:, F_QTY]
    total = int(qty.sum())
    if not total:
        return None
    arrival = priced[:, F_ARRIVAL]
    cost = priced[:, F_SIDE] * (priced[:, F_PRICE] - arrival)
    return {
        "quantity": total,
        "bps": round(float((cost / arrival * qty).sum() / total * 1e4), 4),
        "ticks": round(float((cost * qty).sum() / total / LOBSTER_TICK), 4),
    }


def report(result: IntradayResult) -> dict[str, object]:
    """The figures a trader reads; floats rounded so the JSON is stable across runs."""
    config, fills = result.config, result.fills
    qty = fills[:, F_QTY]
    total = int(qty.sum())
    notional = int((fills[:, F_PRICE] * qty).sum())
    side = fills[:, F_SIDE]
    passive = fills[fills[:, F_RULE] != RULE_TAKE]
    queue_s = passive[:, F_QUEUE_NS] / NS
    out: dict[str, object] = {
        "file": result.day.name,
        "agent": "twap" if isinstance(config, TwapConfig) else "maker",
        "config": asdict(config),
        "replay": {
            "messages": int(result.day.messages.shape[0]),
            "unexplained_mismatches": result.replay_counts["unexplained_mismatches"],
            "window_mismatches": result.replay_counts["window_mismatches"],
        },
        "fills": {
            "count": int(fills.shape[0]),
            "quantity": total,
            "bought": int(qty[side == 1].sum()),
            "sold": int(qty[side == -1].sum()),
            "vwap": _dollars(notional / total) if total else None,
            "by_rule": {
                name: int((fills[:, F_RULE] == r).sum()) for r, name in enumerate(RULE_NAMES)
            },
        },
        "slippage_vs_order_arrival": _slippage(fills),
        "time_in_queue_s": {
            "fills": int(passive.shape[0]),
            "median": round(float(np.median(queue_s)), 6) if passive.shape[0] else None,
            "p90": round(float(np.percentile(queue_s, 90)), 6) if passive.shape[0] else None,
        },
    }
    agent = result.agent
    if isinstance(config, TwapConfig):
        arrival = agent["arrival"]
        out["slippage_vs_parent_arrival"] = (
            {
                "arrival": _dollars(arrival),
                "bps": round(config.side * (notional / total - arrival) / arrival * 1e4, 4),
                "ticks": round(config.side * (notional / total - arrival) / LOBSTER_TICK, 4),
            }
            if total and arrival
            else None
        )
        out["twap"] = {
            "parent": config.quantity,
            "children": agent["children"],
            "filled": total,
            "unfilled": config.quantity - total,
            "arrival": _dollars(agent["arrival"]) if agent["arrival"] else None,
            "children_without_book": agent["no_book"],
        }
        return out
    mark = agent["mark"]
    pnl_units = agent["cash"] + agent["inventory"] * mark
    inventory = fills[:, F_INVENTORY]
    marks = np.arange(_ns(config.start), _ns(config.end) + 1, 30 * 60 * NS, dtype=np.int64)
    marks = np.append(marks, _ns(config.end)) if marks[-1] != _ns(config.end) else marks
    seen = np.searchsorted(fills[:, F_TIME_NS], marks, side="right")
    out["maker"] = {
        "pnl": _dollars(pnl_units),
        "cash": _dollars(agent["cash"]),
        "mark": _dollars(mark),
        "inventory_final": agent["inventory"],
        "inventory_min": int(min(0, inventory.min())) if fills.shape[0] else 0,
        "inventory_max": int(max(0, inventory.max())) if fills.shape[0] else 0,
        "inventory_path": [
            [_clock(t / NS), int(inventory[s - 1]) if s else 0]
            for t, s in zip(marks.tolist(), seen.tolist(), strict=True)
        ],
        "quotes_placed": agent["quotes_placed"],
        "quotes_cancelled": agent["quotes_cancelled"],
        "requotes_without_book": agent["no_book"],
    }
    return out
