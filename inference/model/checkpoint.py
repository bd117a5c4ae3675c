"""Checkpoints as one safetensors file: weights plus everything needed to use them.

A checkpoint is only reproducible and safe to serve if it carries the exact
configuration, the feature schema it was trained on (names, order), the normalisation
fitted on its training window, the sector vocabulary, the universe of codes it has seen
and a hash of the training data.  safetensors stores tensors without pickle (no code
execution on load) and a flat ``str -> str`` metadata map for the rest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from inference.baselines import LightGBMModel
from inference.config import ExperimentConfig
from inference.model.network import Network, build_network
from inference.model.panel import Normaliser

FORMAT = "tradecore.atft-gat-fan/1"


@dataclass
class Checkpoint:
    config: ExperimentConfig
    feature_columns: list[str]
    sector_vocab: list[str]
    universe: list[str]
    edge_dim: int
    normaliser: Normaliser
    target_scale: np.ndarray
    model_state: dict[str, torch.Tensor]
    ablation_state: dict[str, torch.Tensor] | None
    ridge_coef: np.ndarray | None
    data_hash: str
    train_until: date
    histories: dict[str, list[dict[str, float]]]
    lightgbm: LightGBMModel | None = None
    # train/validation date spans ("YYYY-MM-DD..YYYY-MM-DD") it was fitted on, for the
    # reports of `evaluate`; empty in checkpoints written before they were recorded
    spans: dict[str, str] = field(default_factory=dict)

    def build_model(self, ablation: bool = False) -> Network:
        """Instantiate the (ablation) network with the stored weights, in eval mode."""
        cfg = self.config.model
        state = self.model_state
        if ablation:
            if self.ablation_state is None:
                raise ValueError("checkpoint: holds no no-graph ablation (trained without it)")
            cfg = cfg.model_copy(update={"use_graph": False})
            state = self.ablation_state
        model = build_network(cfg, len(self.feature_columns), self.edge_dim, len(self.sector_vocab))
        model.load_state_dict(state)
        return model.eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in checkpoint.model_state.items()
    }
    if checkpoint.ablation_state is not None:
        tensors.update(
            {
                f"no_graph.{k}": v.detach().cpu().contiguous()
                for k, v in checkpoint.ablation_state.items()
            }
        )
    n = checkpoint.normaliser
    for name, array in (
        ("normaliser.lower", n.lower),
        ("normaliser.upper", n.upper),
        ("normaliser.mean", n.mean),
        ("normaliser.std", n.std),
        ("target.scale", checkpoint.target_scale),
    ):
        tensors[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if checkpoint.ridge_coef is not None:
        tensors["ridge.coef"] = torch.from_numpy(
            np.ascontiguousarray(checkpoint.ridge_coef, dtype=np.float32)
        )
    if n.per_date is not None:
        tensors["normaliser.per_date"] = torch.from_numpy(n.per_date.astype(np.uint8))
    if checkpoint.lightgbm is not None:
        for h, text in enumerate(checkpoint.lightgbm.models):
            tensors[f"lightgbm.{h}"] = torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)
    metadata = {
        "format": FORMAT,
        "config": checkpoint.config.to_json(),
        "feature_columns": json.dumps(checkpoint.feature_columns),
        "sector_vocab": json.dumps(checkpoint.sector_vocab),
        "universe": json.dumps(checkpoint.universe),
        "edge_dim": str(checkpoint.edge_dim),
        "feature_clip": repr(n.clip),
        "data_hash": checkpoint.data_hash,
        "train_until": checkpoint.train_until.isoformat(),
        "histories": json.dumps(checkpoint.histories),
        "spans": json.dumps(checkpoint.spans),
    }
    # written beside and renamed over: a process killed mid-write (or a serving process
    # reading the path meanwhile) never sees half a checkpoint, only the old or the new
    partial = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint; a file of another format fails with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError as err:  # not a safetensors file at all (not a ValueError)
        raise ValueError(f"checkpoint: {path} is not a safetensors file ({err})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint: {path} has format {metadata.get('format')!r}, expected {FORMAT!r}"
        )
    tensors = load_file(str(path))

    def section(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    def array(name: str) -> np.ndarray:
        return tensors[name].numpy().astype(np.float32)

    normaliser = Normaliser(
        array("normaliser.lower"),
        array("normaliser.upper"),
        array("normaliser.mean"),
        array("normaliser.std"),
        float(metadata["feature_clip"]),
        tensors["normaliser.per_date"].numpy().astype(bool)
        if "normaliser.per_date" in tensors
        else None,
    )
    boosters = sorted(
        (int(k.split(".")[1]), bytes(v.numpy()).decode())
        for k, v in tensors.items()
        if k.startswith("lightgbm.")
    )
    ablation = section("no_graph.") or None
    return Checkpoint(
        config=ExperimentConfig.from_json(metadata["config"]),
        feature_columns=json.loads(metadata["feature_columns"]),
        sector_vocab=json.loads(metadata["sector_vocab"]),
        universe=json.loads(metadata["universe"]),
        edge_dim=int(metadata["edge_dim"]),
        normaliser=normaliser,
        target_scale=array("target.scale"),
        model_state=section("model."),
        ablation_state=ablation,
        ridge_coef=array("ridge.coef") if "ridge.coef" in tensors else None,
        data_hash=metadata["data_hash"],
        train_until=date.fromisoformat(metadata["train_until"]),
        histories=json.loads(metadata["histories"]),
        lightgbm=LightGBMModel(tuple(text for _, text in boosters)) if boosters else None,
        spans=json.loads(metadata.get("spans", "{}")),
    )
