"""20-day momentum: hold the ``top`` stocks with the highest 20-session return, equal
weight, rebalanced every session.

The classic cross-sectional momentum sort on a short look-back: a stock qualifies when
it traded at the session being decided and ``lookback`` sessions before it (a gap in its
history leaves it out that day rather than comparing across the gap's end points).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from streams.strategies.base import Decision, MarketHistory, Portfolio


@dataclass
class Momentum:
    """``top`` stocks by ``lookback``-session return, each ``invested / top`` of equity."""

    top: int = 50
    lookback: int = 20
    invested: float = 0.95  # the rest stays cash for commissions and slippage
    name: str = "momentum"

    def __post_init__(self) -> None:
        if self.top < 1:
            raise ValueError(f"top={self.top} breaks rule 'at least 1'")
        if self.lookback < 1:
            raise ValueError(f"lookback={self.lookback} breaks rule 'at least 1'")
        if not 0 < self.invested <= 1:
            raise ValueError(f"invested={self.invested} breaks rule 'in (0, 1]'")

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Decision:
        closes, _ = history.window(self.lookback + 1)
        if len(closes) <= self.lookback:
            return {}  # not enough history yet: stay in cash
        with np.errstate(divide="ignore", invalid="ignore"):
            momentum = closes[-1] / closes[0] - 1.0
        valid = np.flatnonzero(np.isfinite(momentum))
        if not len(valid):
            return {}
        # highest first; ties broken by symbol order (stable sort), so runs repeat exactly
        ranked = valid[np.argsort(-momentum[valid], kind="stable")][: self.top]
        weight = self.invested / self.top
        return {history.symbols[i]: weight for i in ranked}
