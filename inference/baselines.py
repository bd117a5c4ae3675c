"""The learned baselines the network has to beat: ridge and LightGBM on the same inputs.

Both read exactly what the network reads on the forecast date, the fold's normalised
features of that day (``PreparedPanel.normed``), and learn the same labels
(``PreparedPanel.scaled``, one model per horizon), so a gap between them and the network
is the network's doing, not the data's. Forecasts come back in return units (times the
fold's target scale) with NaN where a stock is not scored, like the network's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

if TYPE_CHECKING:
    from inference.config import TrainingConfig
    from inference.training import PreparedPanel


def _rows(
    prep: PreparedPanel, dates: list[int], seed: int, max_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eligible (stock, date) rows of ``dates``: features ``[n, F]``, labels ``[n, H]``
    and each row's date (to score a forecast date by date)."""
    mask = prep.eligible[dates]
    x = prep.normed[dates][mask]
    y = prep.scaled[dates][mask]
    day = np.nonzero(mask)[0]
    if x.shape[0] > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False))
        x, y, day = x[pick], y[pick], day[pick]
    return x, y, day


class DailyRankIC:
    """Mean over dates of the Spearman correlation of a forecast with fixed realised rows.

    ``day`` is sorted (rows come date by date); ties share their mean rank. The realised
    side is ranked once, so scoring a boosting round's forecast ranks only the forecast.
    """

    def __init__(self, realised: np.ndarray, day: np.ndarray) -> None:
        starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
        ends = np.r_[starts[1:], len(day)]
        self.slices = [slice(a, b) for a, b in zip(starts, ends, strict=True) if b - a >= 5]
        self.realised = []
        for rows in self.slices:
            ranks = rankdata(realised[rows])
            ranks -= ranks.mean()
            self.realised.append(ranks / max(float(np.sqrt((ranks * ranks).sum())), 1e-12))

    def __call__(self, forecast: np.ndarray) -> float:
        scores = []
        for rows, realised in zip(self.slices, self.realised, strict=True):
            ranks = rankdata(forecast[rows])
            ranks -= ranks.mean()
            norm = float(np.sqrt((ranks * ranks).sum()))
            if norm > 0:
                scores.append(float(ranks @ realised) / norm)
        return float(np.mean(scores)) if scores else float("nan")


def _as_forecast(prep: PreparedPanel, dates: list[int], values: np.ndarray) -> np.ndarray:
    """``[n, S, H]`` scaled forecasts -> return units, NaN where not scored."""
    out = values * prep.target_scale
    out[~prep.eligible[dates]] = np.nan
    return out.astype(np.float32)


@dataclass(frozen=True)
class RidgeModel:
    """Ridge regression of standardised excess returns on the last day's features."""

    coef: np.ndarray  # [F + 1, H]; row 0 is the intercept

    def predict(self, prep: PreparedPanel, dates: list[int]) -> np.ndarray:
        """``[len(dates), S, H]`` return-unit forecasts, NaN where not scored."""
        x = prep.normed[dates]  # [n, S, F]
        return _as_forecast(prep, dates, x @ self.coef[1:] + self.coef[0])


def fit_ridge(
    prep: PreparedPanel, dates: list[int], alpha: float, seed: int = 0, max_rows: int = 300_000
) -> RidgeModel:
    x, y, _ = _rows(prep, dates, seed, max_rows)
    coef = np.zeros((x.shape[1] + 1, y.shape[1]))
    for h in range(y.shape[1]):
        ok = np.isfinite(y[:, h])
        if ok.sum() < x.shape[1] + 2:
            continue
        design = np.hstack([np.ones((int(ok.sum()), 1)), x[ok].astype(np.float64)])
        penalty = alpha * np.eye(design.shape[1])
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        coef[:, h] = np.linalg.solve(design.T @ design + penalty, design.T @ y[ok, h])
    return RidgeModel(coef.astype(np.float32))


@dataclass(frozen=True)
class LightGBMModel:
    """One gradient-boosted tree ensemble per horizon (LightGBM's text format)."""

    models: tuple[str, ...]  # per horizon; "" where a horizon had too few labels

    def predict(self, prep: PreparedPanel, dates: list[int], threads: int = 1) -> np.ndarray:
        """``[len(dates), S, H]`` return-unit forecasts, NaN where not scored."""
        import lightgbm as lgb

        x = prep.normed[dates]  # [n, S, F]
        flat = x.reshape(-1, x.shape[-1])
        out = np.zeros((flat.shape[0], len(self.models)), dtype=np.float64)
        for h, text in enumerate(self.models):
            if text:
                booster = lgb.Booster(model_str=text)
                out[:, h] = booster.predict(flat, num_threads=threads)
        return _as_forecast(prep, dates, out.reshape(*x.shape[:2], len(self.models)))

    def feature_importance(self, columns: list[str]) -> list[dict[str, float]]:
        """Per horizon, each feature's share of the total split gain."""
        import lightgbm as lgb

        shares: list[dict[str, float]] = []
        for text in self.models:
            if not text:
                shares.append({})
                continue
            gain = lgb.Booster(model_str=text).feature_importance("gain")
            total = float(gain.sum()) or 1.0
            shares.append({c: float(g) / total for c, g in zip(columns, gain, strict=True)})
        return shares


def fit_lightgbm(
    prep: PreparedPanel,
    train_dates: list[int],
    validation_dates: list[int],
    training: TrainingConfig,
    max_rows: int = 200_000,
) -> LightGBMModel:
    """Fit per horizon; like the network, stop on the validation dates' mean RankIC.

    (Squared error on daily returns is a poor stopping rule for a ranking signal: it
    stopped after a handful of trees, at the forecast closest to zero.)
    """
    import lightgbm as lgb

    x, y, _ = _rows(prep, train_dates, training.seed, max_rows)
    vx, vy, vday = _rows(prep, validation_dates, training.seed, max_rows)
    params: dict[str, Any] = {
        "objective": "regression",
        "metric": "None",
        "learning_rate": training.lightgbm_learning_rate,
        "num_leaves": training.lightgbm_leaves,
        "min_data_in_leaf": training.lightgbm_min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 63,
        "num_threads": training.threads,
        "seed": training.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    models = []
    for h in range(y.shape[1]):
        ok, vok = np.isfinite(y[:, h]), np.isfinite(vy[:, h])
        if ok.sum() < 2 * training.lightgbm_min_data_in_leaf:
            models.append("")
            continue
        train_set = lgb.Dataset(x[ok], y[ok, h], free_raw_data=True)
        callbacks: list[Callable[..., Any]] = []
        valid_sets = []
        if vok.sum() >= 5:
            valid_sets = [lgb.Dataset(vx[vok], vy[vok, h], reference=train_set)]
            callbacks = [lgb.early_stopping(50, verbose=False)]
            score = DailyRankIC(vy[vok, h], vday[vok])

            def rank_ic(
                forecast: np.ndarray, _: Any, score: DailyRankIC = score
            ) -> tuple[str, float, bool]:
                return "rank_ic", float(np.nan_to_num(score(forecast))), True

        booster = lgb.train(
            params,
            train_set,
            num_boost_round=training.lightgbm_rounds,
            valid_sets=valid_sets,
            feval=rank_ic if valid_sets else None,
            callbacks=callbacks,
        )
        models.append(booster.model_to_string(num_iteration=booster.best_iteration or None))
    return LightGBMModel(tuple(models))
