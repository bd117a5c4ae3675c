"""Batched inference from a checkpoint: the latest cross-section's return quantiles.

Rules for bad input (also in docs/model.md):

* ``as_of`` that is not a trading date in the data: the latest date before it is used,
  with a warning; no date on or before it is a ``ValueError``.
* A requested code outside the checkpoint's universe (never seen in training) is a
  ``ValueError`` naming the codes; without ``codes``, data for such stocks is skipped
  with a warning.
* A stock that is not eligible on the date (no row that day, e.g. halted; too little
  history; too many missing days in the window - see :mod:`inference.model.panel`) gets
  no rows, with a warning listing it.  Missing or NaN inputs inside a window are filled
  with the training mean after normalisation.  A non-finite forecast raises
  ``FloatingPointError``: a prediction is never a silent NaN.
* A feature schema different from the checkpoint's is a ``ValueError``.
"""

from __future__ import annotations

import os
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import torch

from inference.model.checkpoint import Checkpoint, load_checkpoint
from inference.model.panel import FeaturePanel
from inference.training import (
    GraphBuilder,
    GraphSchedule,
    default_graph_builder,
    predict_quantiles,
    prepare_for_checkpoint,
    select_device,
)


class PredictionWarning(UserWarning):
    """Some requested stocks or dates could not be scored; the message says which and why."""


def quantile_column(q: float) -> str:
    return f"q{round(q * 100):02d}"


class Predictor:
    """Loads a checkpoint once; scores cross-sections on the GPU when present, else CPU."""

    def __init__(
        self,
        checkpoint: Checkpoint | str | Path,
        device: str | torch.device | None = None,
        batch_dates: int = 4,
        threads: int | None = None,
    ) -> None:
        self.checkpoint = (
            checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        )
        self.device = torch.device(device) if device is not None else select_device()
        self.model = self.checkpoint.build_model().to(self.device)
        self.batch_dates = batch_dates
        # torch's intra-op thread count is per calling thread (OpenMP) and whatever ran
        # before left it (training sets it process-wide), and a different count changes a
        # float32 sum's last bit: every call runs with this one, whichever thread or
        # process calls (the streams worker predicts in a worker thread), so a forecast
        # is the same bits online and offline. Default: the CPUs this process may use.
        self.threads = threads or (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        self.universe = set(self.checkpoint.universe)
        cfg = self.checkpoint.config
        self.history_days = (
            max(cfg.training.min_history, cfg.model.lookback, cfg.training.graph_window) + 5
        )

    def _check_codes(self, codes: list[str] | None) -> None:
        if codes is None:
            return
        unknown = sorted(set(codes) - self.universe)
        if unknown:
            raise ValueError(
                f"codes: {unknown[:20]} are not in the checkpoint's universe "
                f"({len(self.universe)} codes seen in training); retrain to score them"
            )

    def predict(
        self,
        features: pl.DataFrame,
        as_of: date | None = None,
        codes: list[str] | None = None,
        *,
        graph_builder: GraphBuilder | None = None,
        unscored: dict[str, str] | None = None,
    ) -> pl.DataFrame:
        """Quantiles per stock and horizon for the cross-section at ``as_of`` (or latest).

        ``features`` is the output of :func:`inference.features.build_features`. Returns
        ``date, code, horizon, q10, q25, q50, q75, q90`` (return units: excess return
        over the scored universe's average, as trained). ``unscored``, when given, is
        filled with ``code -> why`` for every stock considered (``codes``, or all in
        ``features``) that got no forecast (see :meth:`predict_dates`).
        """
        return self.predict_dates(
            features,
            [as_of] if as_of else None,
            codes,
            graph_builder=graph_builder,
            unscored=unscored,
        )

    def outside_reason(self) -> str:
        """Why a stock the checkpoint never trained on gets no forecast."""
        return f"no history up to {self.checkpoint.train_until} in the checkpoint"

    def predict_dates(
        self,
        features: pl.DataFrame,
        dates: list[date] | None = None,
        codes: list[str] | None = None,
        *,
        graph_builder: GraphBuilder | None = None,
        unscored: dict[str, str] | None = None,
    ) -> pl.DataFrame:
        """Like :meth:`predict` for several dates at once (batched on the device).

        ``unscored`` (filled when given): ``code -> why`` for the stocks considered that
        have no forecast on some requested date, the reason of the first such date; the
        reasons are short phrases a user can group by (``too little history (< 60
        trading days)``), the same ones the warnings give.
        """
        self._check_codes(codes)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if features.is_empty():
            raise ValueError("features: no rows (empty date range?)")
        available = features.get_column("date").unique().sort()
        wanted = sorted(set(dates)) if dates else [available[-1]]
        resolved = []
        for day in wanted:
            position = available.search_sorted(day, side="right") - 1
            if position < 0:
                raise ValueError(f"as_of: no trading date on or before {day} in the data")
            if available[position] != day:
                warnings.warn(
                    f"as_of: {day} is not a trading date in the data; using {available[position]}",
                    PredictionWarning,
                    stacklevel=2,
                )
            resolved.append(available[position])
        resolved = sorted(set(resolved))
        first = available.search_sorted(resolved[0]) - self.history_days
        start = available[max(0, first)]
        # the whole cross-section is scored even when a few codes are asked for: per-date
        # ranks and the stock graph are defined over the day's universe, so a stock's
        # forecast must not depend on which others were requested with it
        frame = features.filter(pl.col("date").is_between(start, resolved[-1]))
        outside = sorted(set(frame.get_column("code").unique().to_list()) - self.universe)
        if outside and codes is None:
            warnings.warn(
                f"codes: skipping {len(outside)} stocks outside the checkpoint's universe "
                f"(e.g. {outside[:5]})",
                PredictionWarning,
                stacklevel=2,
            )
        if outside:
            frame = frame.filter(~pl.col("code").is_in(outside))
            if unscored is not None:
                named = outside if codes is None else sorted(set(outside) & set(codes))
                unscored.update(dict.fromkeys(named, self.outside_reason()))
        if frame.is_empty():
            raise ValueError("features: no rows for the requested codes in the look-back window")
        ckpt = self.checkpoint
        panel = FeaturePanel.from_frame(
            frame, ckpt.feature_columns, [f"target_{h}d" for h in ckpt.config.model.horizons]
        )
        indices = [panel.date_index(d) for d in resolved]
        first_window = max(0, min(indices) - ckpt.config.model.lookback + 1)
        prep = prepare_for_checkpoint(panel, ckpt, transform_from=first_window)
        graphs = None
        if ckpt.config.model.use_graph:
            builder = graph_builder or default_graph_builder(frame, ckpt.config.training)
            graphs = GraphSchedule(panel, prep.eligible, 1, builder)
        scorable = [t for t in indices if prep.eligible[t].any()]
        if len(scorable) < len(indices):
            skipped = [str(panel.dates[t]) for t in indices if t not in scorable]
            warnings.warn(
                f"as_of: no stock is eligible on {skipped}", PredictionWarning, stacklevel=2
            )
        requested = codes if codes is not None else None
        for t in scorable:
            missing = self._ineligible(panel, prep.eligible[t], requested)
            if unscored is not None:
                for code in missing:
                    unscored.setdefault(code, self._why_ineligible(panel, t, code))
            if missing:
                warnings.warn(
                    f"codes: no forecast on {panel.dates[t]} for {missing[:20]} (no trade that "
                    "day, too little history or too many missing days in the window)",
                    PredictionWarning,
                    stacklevel=2,
                )
        if not scorable:
            return self.empty()
        quantiles = predict_quantiles(
            self.model, prep, graphs, scorable, self.device, self.batch_dates
        )
        result = self._frame(panel, scorable, quantiles)
        return result if codes is None else result.filter(pl.col("code").is_in(codes))

    @staticmethod
    def _ineligible(
        panel: FeaturePanel, eligible: np.ndarray, codes: list[str] | None
    ) -> list[str]:
        index = {c: i for i, c in enumerate(panel.codes)}
        wanted = codes if codes is not None else panel.codes
        return sorted(c for c in wanted if c not in index or not eligible[index[c]])

    def _why_ineligible(self, panel: FeaturePanel, t: int, code: str) -> str:
        """The first rule of :func:`inference.model.panel.eligibility` ``code`` fails on ``t``."""
        training = self.checkpoint.config.training
        lookback = self.checkpoint.config.model.lookback
        if code not in panel.codes:
            return "no quotes in the look-back window"
        present = panel.present[: t + 1, panel.codes.index(code)]
        if not present[-1]:
            return f"no quote on {panel.dates[t]}"
        if int(present.sum()) < training.min_history:
            return f"too little history (< {training.min_history} trading days)"
        return f"too few trading days in the last {lookback} (sparse window)"

    def empty(self) -> pl.DataFrame:
        """No forecast, in the forecast frame's schema (date, code, horizon, q..)."""
        schema: dict[str, pl.DataType | type[pl.DataType]] = {
            "date": pl.Date,
            "code": pl.Utf8,
            "horizon": pl.Int32,
        }
        for q in self.checkpoint.config.model.quantiles:
            schema[quantile_column(q)] = pl.Float32
        return pl.DataFrame(schema=schema)

    def _frame(self, panel: FeaturePanel, dates: list[int], quantiles: np.ndarray) -> pl.DataFrame:
        cfg = self.checkpoint.config.model
        d, s = np.nonzero(np.isfinite(quantiles[..., 0, 0]))
        rows = len(d)
        horizons = np.array(cfg.horizons, dtype=np.int32)
        values = quantiles[d, s]  # [rows, H, Q]
        columns: dict[str, object] = {
            "date": np.repeat([panel.dates[dates[i]] for i in d], len(horizons)).tolist(),
            "code": np.repeat([panel.codes[j] for j in s], len(horizons)).tolist(),
            "horizon": np.tile(horizons, rows),
        }
        for k, q in enumerate(cfg.quantiles):
            columns[quantile_column(q)] = values[:, :, k].reshape(-1).astype(np.float32)
        frame = pl.DataFrame(columns, schema_overrides={"date": pl.Date, "horizon": pl.Int32})
        return frame.sort("date", "code", "horizon")
