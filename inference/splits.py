"""Walk-forward splits over the trading calendar, with purge and embargo.

A label at date ``t`` for horizon ``h`` is the return from ``t`` to ``t + h`` trading
days, so a training sample near the end of its window "sees" prices inside the next
period.  Every boundary therefore leaves a gap of ``embargo`` trading days (at least the
longest horizon): training labels end before validation starts, validation labels end
before the test period starts.  Training windows expand (each fold trains on everything
before it); test windows are calendar years and never overlap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date

import numpy as np


@dataclass(frozen=True)
class Fold:
    """Half-open index ranges ``[start, stop)`` into the panel's trading dates."""

    name: str
    train: range
    validation: range
    test: range

    def describe(self, dates: list[date]) -> dict[str, str]:
        def span(r: range) -> str:
            return f"{dates[r.start]}..{dates[r.stop - 1]}" if len(r) else "empty"

        return {
            "fold": self.name,
            "train": span(self.train),
            "validation": span(self.validation),
            "test": span(self.test),
        }


def training_split(n_dates: int, validation_days: int, embargo: int, name: str = "final") -> Fold:
    """Train/validation split of all dates (for ``train --until``): no test period."""
    val_stop = n_dates
    val_start = max(0, val_stop - validation_days)
    train_stop = val_start - embargo
    if train_stop < max(validation_days, 20):
        raise ValueError(
            f"dates: {n_dates} trading days are too few for validation_days="
            f"{validation_days} plus embargo={embargo} and a training window"
        )
    return Fold(name, range(0, train_stop), range(val_start, val_stop), range(0, 0))


def walk_forward_folds(
    dates: list[date],
    test_years: tuple[int, ...],
    validation_days: int,
    embargo: int,
    min_train_days: int = 250,
) -> list[Fold]:
    """One fold per test year: expanding train, validation, embargoes in between.

    Layout (trading-day indices): ``train | embargo | validation | embargo | test``.
    """
    years = np.array([d.year for d in dates])
    folds = []
    for year in test_years:
        positions = np.flatnonzero(years == year)
        if positions.size == 0:
            raise ValueError(f"test_years: no trading dates in {year}")
        test = range(int(positions[0]), int(positions[-1]) + 1)
        val_stop = test.start - embargo
        val_start = val_stop - validation_days
        train_stop = val_start - embargo
        if train_stop < min_train_days:
            raise ValueError(
                f"test_years: {year} leaves {max(train_stop, 0)} training days "
                f"(< {min_train_days}) before its validation window and embargoes"
            )
        folds.append(Fold(str(year), range(0, train_stop), range(val_start, val_stop), test))
    return folds


def check_fold(fold: Fold, embargo: int) -> None:
    """Raise if any two periods of ``fold`` are closer than ``embargo`` trading days."""
    periods = [r for r in (fold.train, fold.validation, fold.test) if len(r)]
    for earlier, later in itertools.pairwise(periods):
        if later.start - earlier.stop < embargo:
            raise ValueError(
                f"fold {fold.name}: gap {later.start - earlier.stop} < embargo {embargo}"
            )
