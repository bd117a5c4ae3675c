"""The model strategy: hold the ``top`` stocks the ATFT-GAT-FAN checkpoint ranks
highest by median forecast return, equal weight, rebalanced every session.

At each session's close it scores that cross-section with
:func:`streams.signals.predict_day`: the features over a trailing window long enough
for the checkpoint's look-back and graph, scored by :class:`inference.serving.Predictor`
(the same step the streams loop runs live); nothing after the close is visible to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from streams.strategies.base import Decision, MarketHistory, Portfolio


@dataclass
class ModelStrategy:
    """``top`` stocks by the checkpoint's median forecast at ``horizon`` (default: the
    shortest it was trained for)."""

    predictor: Any  # inference.serving.Predictor (imported lazily: torch is heavy)
    listed_info: Any  # polars frame of listed issues (sectors feed the graph)
    top: int = 50
    horizon: int | None = None
    invested: float = 0.95
    name: str = "model"

    def __post_init__(self) -> None:
        if self.top < 1:
            raise ValueError(f"top={self.top} breaks rule 'at least 1'")
        horizons = list(self.predictor.checkpoint.config.model.horizons)
        if self.horizon is None:
            self.horizon = min(horizons)
        elif self.horizon not in horizons:
            raise ValueError(f"horizon={self.horizon} breaks rule 'one of the checkpoint's "
                             f"horizons {horizons}'")

    def decide(self, day: date, history: MarketHistory, portfolio: Portfolio) -> Decision:
        import polars as pl

        from streams.signals import predict_day, sessions_for

        quotes = history.quotes()
        sessions = sessions_for(self.predictor)
        if quotes.get_column("Date").n_unique() < sessions // 2:
            return {}
        frame = predict_day(self.predictor, quotes, self.listed_info, day, sessions)
        frame = frame.filter(pl.col("horizon") == self.horizon)
        if frame.is_empty():
            return {}  # nothing scorable in the window: stay where we are
        ranked = frame.sort(["q50", "code"], descending=[True, False]).head(self.top)
        weight = self.invested / self.top
        by_code = history.symbol_for_code
        return {by_code[c]: weight for c in ranked.get_column("code").to_list() if c in by_code}
