"""Daily backtests through the live order flow (see ``docs/backtests.md``)."""

from streams.backtest.driver import (
    BacktestError,
    BacktestResult,
    BacktestSpec,
    FillModel,
    run_backtest,
)

__all__ = ["BacktestError", "BacktestResult", "BacktestSpec", "FillModel", "run_backtest"]
