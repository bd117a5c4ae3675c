"""ATFT-GAT-FAN network: shapes, gradients, FAN round trip, quantile order, losses, configs."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from inference.config import ExperimentConfig, ModelConfig, load_config
from inference.features import FEATURE_COLUMNS
from inference.model import (
    ATFTGATFAN,
    FrequencyAdaptiveNormalization,
    parameter_count,
    quantile_loss,
    rank_correlation_loss,
)
from inference.model.network import GraphBlock

N_FEATURES, EDGE_DIM, N_SECTORS = 12, 3, 5


def tiny_config(**overrides: object) -> ModelConfig:
    base: dict[str, object] = dict(
        lookback=10,
        hidden=16,
        variable_hidden=4,
        attention_heads=2,
        gat_heads=2,
        gat_layers=2,
        fan_top_k=2,
        fan_hidden=8,
        sector_embedding=4,
        dropout=0.0,
    )
    base.update(overrides)
    return ModelConfig.model_validate(base)


def ring_graph(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.arange(n)
    dst = (src + 1) % n
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    return edge_index, torch.rand(edge_index.shape[1], EDGE_DIM)


def batch(n: int = 9, lookback: int = 10) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    x = torch.randn(n, lookback, N_FEATURES)
    sector = torch.randint(0, N_SECTORS + 1, (n,))
    return (x, sector, *ring_graph(n))


def test_forward_shapes_and_non_crossing_quantiles() -> None:
    cfg = tiny_config()
    model = ATFTGATFAN(cfg, N_FEATURES, EDGE_DIM, N_SECTORS)
    forecast = model(*batch())
    assert forecast.quantiles.shape == (9, len(cfg.horizons), len(cfg.quantiles))
    assert forecast.variable_weights.shape == (9, cfg.lookback, N_FEATURES)
    assert torch.allclose(forecast.variable_weights.sum(-1), torch.ones(9, cfg.lookback))
    assert forecast.attention.shape == (9, cfg.attention_heads, cfg.lookback)
    assert (forecast.quantiles.diff(dim=-1) > 0).all()
    assert torch.isfinite(forecast.quantiles).all()


def test_gradients_reach_every_block() -> None:
    model = ATFTGATFAN(tiny_config(), N_FEATURES, EDGE_DIM, N_SECTORS)
    x, sector, edge_index, edge_attr = batch()
    sector = torch.arange(9) % (N_SECTORS + 1)
    model(x, sector, edge_index, edge_attr).quantiles.pow(2).sum().backward()
    first_gat = model.graph[0]
    assert isinstance(first_gat, GraphBlock)
    blocks: dict[str, torch.nn.Module | None] = {
        "fan": model.fan,
        "sector": model.sector,
        "variable_selection": model.encoder.selection,
        "lstm": model.encoder.lstm,
        "attention": model.encoder.attention,
        "static_context": model.encoder.static_h,
        "gatv2": model.graph,
        "edge_attributes": first_gat.conv.lin_edge,
        "quantile_head": model.head,
        "fan_denormalise": model.main_to_return,
    }
    for name, block in blocks.items():
        assert block is not None
        grads = [p.grad for p in block.parameters()]
        assert grads and all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name


def test_no_graph_ablation_ignores_edges_and_graph_model_uses_them() -> None:
    x, sector, edge_index, edge_attr = batch()
    torch.manual_seed(1)
    ablation = ATFTGATFAN(tiny_config(use_graph=False), N_FEATURES, EDGE_DIM, N_SECTORS).eval()
    assert len(ablation.graph) == 0
    no_edges = (torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, EDGE_DIM))
    assert torch.equal(
        ablation(x, sector, edge_index, edge_attr).quantiles,
        ablation(x, sector, *no_edges).quantiles,
    )
    torch.manual_seed(1)
    with_graph = ATFTGATFAN(tiny_config(), N_FEATURES, EDGE_DIM, N_SECTORS).eval()
    assert not torch.allclose(
        with_graph(x, sector, edge_index, edge_attr).quantiles,
        with_graph(x, sector, *no_edges).quantiles,
    )


def test_fan_denormalise_inverts_normalise_when_prediction_equals_removed_part() -> None:
    fan = FrequencyAdaptiveNormalization(lookback=16, horizon_steps=4, top_k=3, hidden=8)
    t = torch.arange(16, dtype=torch.float32)
    x = torch.stack([torch.sin(t / 2) * 3 + 0.1 * torch.randn(16), t * 0.5], dim=-1)[None]
    residual, main = fan.normalize(x)
    assert torch.allclose(fan.denormalize(residual, main), x, atol=1e-5)
    # The dominant frequencies are gone from the residual's spectrum...
    spectrum = torch.fft.rfft(x, dim=1).abs()
    removed = spectrum.topk(3, dim=1).indices
    left = torch.fft.rfft(residual, dim=1).abs().gather(1, removed)
    assert float(left.max()) < 1e-4
    # ...and a pure sinusoid at one bin is entirely "main" with top_k >= 1.
    sine = torch.sin(2 * math.pi * 2 * t / 16)[None, :, None]
    residual, main = fan.normalize(sine)
    assert float(residual.abs().max()) < 1e-5
    assert fan.predict_main(x, fan.normalize(x)[1]).shape == (1, 4, 2)


def test_fan_rejects_windows_of_the_wrong_length() -> None:
    fan = FrequencyAdaptiveNormalization(lookback=16, horizon_steps=4, top_k=3, hidden=8)
    with pytest.raises(ValueError, match="lookback"):
        fan.normalize(torch.zeros(1, 10, 2))


def test_quantile_loss_matches_hand_computation_and_skips_missing_targets() -> None:
    quantiles = torch.tensor([0.1, 0.5, 0.9])
    predicted = torch.tensor([[[0.0, 1.0, 2.0]], [[5.0, 5.0, 5.0]]])
    target = torch.tensor([[1.5], [float("nan")]])
    # errors 1.5, 0.5, -0.5 -> 0.1*1.5, 0.5*0.5, 0.1*0.5 -> mean over 3 quantiles
    expected = (0.15 + 0.25 + 0.05) / 3
    assert float(quantile_loss(predicted, target, quantiles)) == pytest.approx(expected)


def test_rank_loss_zero_for_perfect_order_and_two_for_reversed() -> None:
    target = torch.arange(10, dtype=torch.float32)[:, None]
    groups = torch.zeros(10, dtype=torch.long)
    assert float(rank_correlation_loss(target * 3, target, groups)) == pytest.approx(0, abs=1e-4)
    assert float(rank_correlation_loss(-target, target, groups)) == pytest.approx(2, abs=1e-4)


def test_bundled_configs_validate_and_default_is_seed_sized() -> None:
    cpu, default = load_config("cpu"), load_config("default")
    assert cpu.model.hidden < default.model.hidden
    model = ATFTGATFAN(default.model, len(FEATURE_COLUMNS), EDGE_DIM, 33)
    assert 5_000_000 <= parameter_count(model) <= 6_000_000


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="embargo_days"):
        ExperimentConfig.model_validate({"name": "x", "training": {"embargo_days": 5}})
    with pytest.raises(ValidationError, match="hidden"):
        ModelConfig.model_validate({"hidden": 30, "attention_heads": 4})
    with pytest.raises(ValidationError, match="median"):
        ModelConfig.model_validate({"quantiles": (0.1, 0.9)})
    with pytest.raises(ValidationError, match="extra"):
        ExperimentConfig.model_validate({"name": "x", "model": {"hiden": 3}})
    with pytest.raises(FileNotFoundError, match="bundled"):
        load_config("no-such-config")
