# ruff: noqa: E402  (imports follow the sys.path fix below)
"""ATFT-GAT-FAN serving latency and training throughput on the shared J-Quants data.

Prints one JSON object:

* ``stocks``: stocks scored in the latest cross-section (the full 494-stock universe);
* ``cpu_ms`` / ``gpu_ms``: median wall time of ``Predictor.predict`` for that
  cross-section (look-back window, graph, batched forward in ``inference_mode``) with the
  CPU config; ``gpu_ms`` is null without a GPU;
* ``model_cpu_ms``: the network's forward pass alone for the same cross-section;
* ``train_samples_per_s``: (stock, date) samples per second through a training step
  (forward, loss, backward, optimiser) with the CPU config;
* ``default_parameters`` and ``default_train_steps_per_s``: the full-size config's
  parameter count and CPU training steps (one 494-stock cross-section each) per second.

Weights are freshly initialised: speed does not depend on their values.
Run: ``.venv/bin/python benchmarks/inference.py [--data DIR] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

# `python benchmarks/inference.py` puts benchmarks/ first on sys.path, where this very file
# would shadow the `inference` package: drop that entry (the project root stays importable
# through the editable install or PYTHONPATH).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.append(str(_HERE.parent))

import numpy as np
import polars as pl
import torch

from inference.config import ExperimentConfig, load_config
from inference.data import load_daily_quotes, load_listed_info
from inference.features import FEATURE_COLUMNS, TARGET_COLUMNS, build_features
from inference.model import ATFTGATFAN, build_network, quantile_loss, rank_correlation_loss
from inference.model.checkpoint import Checkpoint
from inference.model.panel import FeaturePanel, Normaliser
from inference.serving import Predictor
from inference.training import (
    GraphSchedule,
    cross_sections,
    default_graph_builder,
    graph_edge_dim,
    prepare_panel,
    usable_dates,
)


def _checkpoint(cfg: ExperimentConfig, panel: FeaturePanel) -> Checkpoint:
    edge_dim = graph_edge_dim()
    vocab = sorted(set(panel.sectors))
    model = build_network(cfg.model, len(panel.feature_columns), edge_dim, len(vocab))
    train = np.arange(len(panel.dates) // 2)
    return Checkpoint(
        config=cfg,
        feature_columns=list(panel.feature_columns),
        sector_vocab=vocab,
        universe=list(panel.codes),
        edge_dim=edge_dim,
        normaliser=Normaliser.fit(
            panel,
            train,
            cfg.training.feature_clip,
            cross_section=cfg.training.normalisation == "cross_section",
        ),
        target_scale=np.ones(len(cfg.model.horizons), dtype=np.float32),
        model_state=model.state_dict(),
        ablation_state=None,
        ridge_coef=None,
        data_hash="benchmark",
        train_until=panel.dates[train[-1]],
        histories={},
    )


def _train_steps_per_s(
    cfg: ExperimentConfig, frame: pl.DataFrame, panel: FeaturePanel, steps: int
) -> tuple[float, float]:
    train = np.arange(len(panel.dates) - 300)
    prep = prepare_panel(panel, train, cfg.model, cfg.training)
    graphs = GraphSchedule(panel, prep.eligible, 1, default_graph_builder(frame, cfg.training))
    edge_dim = graph_edge_dim()
    torch.manual_seed(0)
    model = ATFTGATFAN(cfg.model, len(panel.feature_columns), edge_dim, len(prep.sector_vocab))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    quantiles = torch.tensor(cfg.model.quantiles)
    dates = usable_dates(prep, train, cfg.model.lookback)[-steps - 1 :]
    batches = [
        cross_sections(prep, graphs, [t], cfg.model.lookback, edge_dim, torch.device("cpu"))
        for t in dates
    ]
    samples, elapsed = 0, 0.0
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        q = model(batch.x, batch.sector, batch.edge_index, batch.edge_attr).quantiles
        loss = quantile_loss(q, batch.target, quantiles) + rank_correlation_loss(
            q[..., 2], batch.target, batch.group
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if i > 0:  # the first step pays for allocation warm-up
            elapsed += time.perf_counter() - started
            samples += batch.x.shape[0]
    return samples / elapsed, (len(batches) - 1) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--config", default="cpu", help="Config whose network is served.")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full-steps", type=int, default=2, help="Timed steps, full config.")
    args = parser.parse_args()
    if args.data is None:
        from infra.settings import get_settings

        args.data = get_settings().data_dir / "jquants"
    cfg = load_config(args.config)
    torch.set_num_threads(args.threads or cfg.training.threads)
    frame = build_features(load_daily_quotes(args.data), load_listed_info(args.data))
    panel = FeaturePanel.from_frame(frame, list(FEATURE_COLUMNS), list(TARGET_COLUMNS))
    checkpoint = _checkpoint(cfg, panel)
    latest = panel.dates[-1]

    def latency(device: str) -> tuple[int, float]:
        predictor = Predictor(checkpoint, device=device, threads=torch.get_num_threads())
        timings, stocks = [], 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.repeats + 1):
                started = time.perf_counter()
                out = predictor.predict(frame, latest)
                timings.append((time.perf_counter() - started) * 1000)
                stocks = out.get_column("code").n_unique()
        return stocks, statistics.median(timings[1:])

    stocks, cpu_ms = latency("cpu")
    gpu_ms = latency("cuda")[1] if torch.cuda.is_available() else None

    prep = prepare_panel(panel, np.arange(len(panel.dates) // 2), cfg.model, cfg.training)
    graphs = GraphSchedule(panel, prep.eligible, 1, default_graph_builder(frame, cfg.training))
    last = len(panel.dates) - 1
    batch = cross_sections(
        prep, graphs, [last], cfg.model.lookback, graph_edge_dim(), torch.device("cpu")
    )
    model = checkpoint.build_model()
    model_ms = []
    with torch.inference_mode():
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            model(batch.x, batch.sector, batch.edge_index, batch.edge_attr)
            model_ms.append((time.perf_counter() - started) * 1000)

    samples_per_s, _ = _train_steps_per_s(cfg, frame, panel, steps=8)
    full = load_config("default")
    full_model = ATFTGATFAN(full.model, len(FEATURE_COLUMNS), graph_edge_dim(), 33)
    _, full_steps_per_s = _train_steps_per_s(full, frame, panel, steps=args.full_steps)
    print(
        json.dumps(
            {
                "stocks": stocks,
                "cpu_ms": round(cpu_ms, 1),
                "gpu_ms": None if gpu_ms is None else round(gpu_ms, 1),
                "model_cpu_ms": round(statistics.median(model_ms[1:]), 1),
                "train_samples_per_s": round(samples_per_s, 1),
                "default_parameters": sum(p.numel() for p in full_model.parameters()),
                "default_train_steps_per_s": round(full_steps_per_s, 3),
                "torch_threads": torch.get_num_threads(),
                "features": len(FEATURE_COLUMNS),
            }
        )
    )


if __name__ == "__main__":
    main()
