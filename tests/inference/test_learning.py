"""What makes the network learn: per-date scaling, the graph gate, the step budget,
the LightGBM baseline and the interpretation views (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from inference.interpret import interpret
from inference.model.checkpoint import load_checkpoint, save_checkpoint
from inference.model.network import GraphBlock
from inference.model.panel import FeaturePanel, Normaliser
from inference.report import interpretation_section
from inference.splits import Fold
from inference.training import (
    GraphSchedule,
    bundle_to_checkpoint,
    default_graph_builder,
    learning_rate_factor,
    prepare_for_checkpoint,
    prepare_panel,
    train_fold,
    usable_dates,
)
from tests.inference.test_training import tiny_config

CROSS = {"normalisation": "cross_section", "target_normalisation": "cross_section"}


def fold_of(panel: FeaturePanel) -> Fold:
    n = len(panel.dates)
    return Fold("tiny", range(0, n - 200), range(n - 180, n - 120), range(n - 100, n))


def test_per_date_scaling_ranks_stocks_within_each_day_and_keeps_market_features_global(
    slice_panel: FeaturePanel,
) -> None:
    columns = slice_panel.feature_columns
    train = np.arange(300)
    scaler = Normaliser.fit(slice_panel, train, 5.0, cross_section=True)
    assert scaler.per_date is not None
    market = [c for c in columns if c.startswith("mkt_")]
    assert market and not any(scaler.per_date[columns.index(c)] for c in market)
    assert scaler.per_date[columns.index("vol_20d")] and scaler.per_date[columns.index("ret_5d")]

    day = 350
    raw = slice_panel.features[day : day + 1].copy()
    scaled = scaler.transform(raw)[0]
    vol = columns.index("vol_20d")
    ok = np.isfinite(raw[0, :, vol])
    # same order as the raw values, centred, Gaussian-sized whatever the feature's level
    assert (np.argsort(raw[0, ok, vol]) == np.argsort(scaled[ok, vol])).all()
    assert abs(scaled[ok, vol].mean()) < 0.05 and 0.8 < scaled[ok, vol].std() < 1.1
    calmer = raw.copy()
    calmer[..., vol] *= 0.2  # a calm regime: every stock's volatility a fifth
    np.testing.assert_array_equal(scaler.transform(calmer)[0][:, vol], scaled[:, vol])
    # the global rule would have moved with the regime
    global_rule = Normaliser.fit(slice_panel, train, 5.0)
    assert not np.allclose(
        global_rule.transform(calmer)[0][ok, vol], global_rule.transform(raw)[0][ok, vol]
    )


def test_per_date_labels_have_unit_spread_each_day_and_forecasts_come_back_in_returns(
    slice_panel: FeaturePanel,
) -> None:
    cfg = tiny_config(**CROSS)
    prep = prepare_panel(slice_panel, np.arange(300), cfg.model, cfg.training)
    for t in (320, 400, 480):
        labels = prep.scaled[t][prep.eligible[t]]
        assert 0.85 < np.nanstd(labels[:, 0]) < 1.05  # clipped at 5 sigma, so at most 1
    spread = np.nanstd(prep.excess[:300], axis=1)
    np.testing.assert_allclose(prep.target_scale, np.nanmedian(spread, axis=0), rtol=0.05)


def test_a_gated_graph_layer_starts_as_the_identity_and_learns_to_open() -> None:
    torch.manual_seed(0)
    block = GraphBlock(8, 2, 3, 0.0, gated=True)
    h = torch.randn(6, 8)
    edges = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])
    attr = torch.rand(6, 3)
    assert torch.equal(block(h, edges, attr), h) and block.opening() == 0.0
    block(h, edges, attr).pow(2).sum().backward()
    assert block.gate is not None and block.gate.grad is not None and block.gate.grad != 0
    assert GraphBlock(8, 2, 3, 0.0, gated=False).opening() == 1.0


def test_cosine_schedule_warms_up_then_decays_to_five_percent() -> None:
    factor = learning_rate_factor(tiny_config(lr_schedule="cosine", warmup_steps=10).training, 110)
    assert factor(0) == pytest.approx(1 / 11) and factor(9) == pytest.approx(10 / 11)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.525)
    assert factor(110) == pytest.approx(0.05)
    constant = learning_rate_factor(tiny_config().training, 110)
    assert {constant(s) for s in (0, 50, 109)} == {1.0}


def test_step_cap_and_time_budget_stop_training_and_keep_the_best_model(
    slice_features: pl.DataFrame, slice_panel: FeaturePanel
) -> None:
    fold = fold_of(slice_panel)
    capped = train_fold(
        slice_features, slice_panel, fold, tiny_config(max_steps=7), device=torch.device("cpu")
    )
    history = capped.histories["model"]
    assert history[-1]["steps"] == 7 and len(history) == 1  # 40 steps/epoch planned, 7 run
    rushed = train_fold(
        slice_features,
        slice_panel,
        fold,
        tiny_config(time_budget_s=1e-3),
        device=torch.device("cpu"),
    )
    assert [e["steps"] for e in rushed.histories["model"]] == [1]


@pytest.fixture(scope="module")
def trained(slice_features: pl.DataFrame, slice_panel: FeaturePanel):  # type: ignore[no-untyped-def]
    cfg = tiny_config(train_baselines=True, **CROSS).model_copy(
        update={
            "model": tiny_config().model.model_copy(
                update={"graph_gate": True, "linear_head": True}
            )
        }
    )
    fold = fold_of(slice_panel)
    bundle = train_fold(slice_features, slice_panel, fold, cfg, device=torch.device("cpu"))
    return bundle, fold


def test_lightgbm_baseline_round_trips_through_the_checkpoint(
    trained, slice_panel: FeaturePanel, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    bundle, fold = trained
    assert bundle.lightgbm is not None and len(bundle.lightgbm.models) == 4
    dates = usable_dates(bundle.prep, fold.test, 10)[:5]
    before = bundle.lightgbm.predict(bundle.prep, dates)
    scored = bundle.prep.eligible[dates]
    assert np.isfinite(before[scored]).all() and np.isnan(before[~scored]).all()
    assert before[scored].std() > 0  # it learned something, not a constant

    loaded = load_checkpoint(save_checkpoint(bundle_to_checkpoint(bundle), tmp_path / "m.st"))
    assert loaded.normaliser.per_date is not None
    np.testing.assert_array_equal(loaded.normaliser.per_date, bundle.prep.normaliser.per_date)
    prep = prepare_for_checkpoint(slice_panel, loaded)
    assert loaded.lightgbm is not None
    np.testing.assert_allclose(loaded.lightgbm.predict(prep, dates), before, rtol=1e-6)
    np.testing.assert_allclose(prep.normed[dates], bundle.prep.normed[dates])
    gain = bundle.lightgbm.feature_importance(slice_panel.feature_columns)
    assert len(gain) == 4 and all(abs(sum(g.values()) - 1) < 1e-6 for g in gain)


def test_interpretation_reads_selection_attention_and_peers_from_the_network(
    trained, slice_features: pl.DataFrame, slice_panel: FeaturePanel
) -> None:  # type: ignore[no-untyped-def]
    bundle, fold = trained
    cfg = bundle.config
    graphs = GraphSchedule(
        slice_panel, bundle.prep.eligible, 20, default_graph_builder(slice_features, cfg.training)
    )
    dates = usable_dates(bundle.prep, fold.test, cfg.model.lookback)
    view = interpret(bundle.model, bundle.prep, graphs, dates, torch.device("cpu"), max_dates=4)
    assert view.dates == 4
    assert sum(view.variable_weights.values()) == pytest.approx(1.0, abs=1e-4)
    assert set(view.saliency) == {"1d", "5d", "10d", "20d"}
    assert all(sum(s.values()) == pytest.approx(1.0, abs=1e-4) for s in view.saliency.values())
    assert len(view.attention_by_lag) == 10 and sum(view.attention_by_lag) == pytest.approx(1.0)
    assert len(view.graph_gates) == 1 and -1.0 < view.graph_gates[0] < 1.0
    assert 1 <= len(view.peers) <= 5
    for code, peers in view.peers.items():
        assert peers and all(p != code and 0 < w <= 1 for p, w in peers)
        assert [w for _, w in peers] == sorted((w for _, w in peers), reverse=True)

    text = "\n".join(
        interpretation_section(
            view, ["1d", "5d", "10d", "20d"], None, {next(iter(view.peers)): "Big Co"}
        )
    )
    assert "## What the network looks at" in text and "Big Co" in text
    assert max(view.variable_weights, key=view.variable_weights.__getitem__) in text


def test_a_few_codes_get_the_same_forecast_as_in_the_whole_cross_section(
    trained, slice_features: pl.DataFrame, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from inference.serving import Predictor

    bundle, _ = trained
    predictor = Predictor(bundle_to_checkpoint(bundle), device="cpu", threads=1)
    day = slice_features.get_column("date").max()
    whole = predictor.predict(slice_features, day)
    codes = whole.get_column("code").unique().sort().to_list()[:2]
    few = predictor.predict(slice_features, day, codes)
    assert sorted(set(few.get_column("code"))) == codes
    expected = whole.filter(pl.col("code").is_in(codes)).sort("code", "horizon")
    assert few.sort("code", "horizon").equals(expected)


def walk_forward_config() -> str:
    """test_cli_model's tiny config, with the new options on and one 2013 test year."""
    from tests.inference.test_cli_model import CONFIG

    return (
        CONFIG.replace('name = "tiny-cli"', 'name = "tiny-walk-forward"')
        .replace("[model]\n", "[model]\ngraph_gate = true\n")
        .replace("epochs = 1\nsteps_per_epoch = 3\n", "epochs = 2\nsteps_per_epoch = 20\n")
        .replace(
            "[training]\n",
            '[training]\nnormalisation = "cross_section"\n'
            'target_normalisation = "cross_section"\n'
            "lightgbm_rounds = 20\nlightgbm_min_data_in_leaf = 50\n",
        )
        + "[walk_forward]\ntest_years = [2013]\n"
    )


def test_walk_forward_reports_lightgbm_and_what_the_network_looks_at(
    all_quotes: pl.DataFrame, jquants_dir: Path, tmp_path: Path
) -> None:
    import json
    import shutil
    from datetime import date

    from typer.testing import CliRunner

    from api.cli import app

    codes = sorted(all_quotes.get_column("Code").unique().to_list())[::16][:30]
    all_quotes.filter(
        pl.col("Code").is_in(codes), pl.col("Date").is_between(date(2011, 6, 1), date(2013, 12, 31))
    ).write_parquet(tmp_path / "daily_quotes.parquet")
    shutil.copy(jquants_dir / "listed_info.json", tmp_path / "listed_info.json")
    (tmp_path / "tiny.toml").write_text(walk_forward_config())
    report = tmp_path / "out" / "results.md"
    result = CliRunner().invoke(
        app,
        ["model", "walk-forward", "--data", str(tmp_path), "--config", str(tmp_path / "tiny.toml"),
         "--max-steps", "5", "--report", str(report), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout[result.stdout.index("{") :])["metrics"]
    assert {"model", "no_graph", "ridge", "lightgbm"} <= set(metrics)
    text = report.read_text()
    assert "| LightGBM (same features) |" in text and "## What the network looks at" in text
    saved = json.loads((report.parent / "results" / "metrics.json").read_text())
    assert all(e["steps"] <= 5 for e in saved["histories"]["2013"]["model"])
    assert saved["interpretation"]["graph_gates"] and len(saved["lightgbm_gain"]) == 4


def test_a_seed_ensemble_averages_members_from_consecutive_seeds_and_round_trips(
    slice_features: pl.DataFrame, slice_panel: FeaturePanel, tmp_path: Path
) -> None:
    from inference.model import ATFTGATFAN, SeedEnsemble
    from inference.training import predict_quantiles

    base = tiny_config(max_steps=4, **CROSS)
    cfg = base.model_copy(
        update={"model": base.model.model_copy(update={"ensemble": 2, "use_graph": False})}
    )
    fold = fold_of(slice_panel)
    bundle = train_fold(slice_features, slice_panel, fold, cfg, device=torch.device("cpu"))
    assert isinstance(bundle.model, SeedEnsemble) and len(bundle.model.members) == 2
    assert {e["member"] for e in bundle.histories["model"]} == {1.0, 2.0}
    single = tiny_config(max_steps=4, seed=8, **CROSS)
    second = train_fold(
        slice_features,
        slice_panel,
        fold,
        single.model_copy(update={"model": single.model.model_copy(update={"use_graph": False})}),
        device=torch.device("cpu"),
    ).model
    assert isinstance(second, ATFTGATFAN)  # member 2 is the seed-8 network, bit for bit
    for key, value in second.state_dict().items():
        assert torch.equal(value, bundle.model.members[1].state_dict()[key]), key

    dates = usable_dates(bundle.prep, fold.test, 10)[:3]
    cpu = torch.device("cpu")
    both = predict_quantiles(bundle.model, bundle.prep, None, dates, cpu)
    parts = [predict_quantiles(m, bundle.prep, None, dates, cpu) for m in bundle.model.members]
    np.testing.assert_allclose(both, (parts[0] + parts[1]) / 2, rtol=1e-5, atol=1e-7)
    assert not np.allclose(parts[0], parts[1])

    loaded = load_checkpoint(save_checkpoint(bundle_to_checkpoint(bundle), tmp_path / "e.st"))
    again = predict_quantiles(
        loaded.build_model(), prepare_for_checkpoint(slice_panel, loaded), None, dates, cpu
    )
    np.testing.assert_allclose(again, both, rtol=1e-5, atol=1e-7)


def test_the_report_says_plainly_which_goals_are_missed() -> None:
    from inference.report import goal_section

    def metrics(rank_ic: float, sharpe: float) -> dict[str, dict[str, float]]:
        return {h: {"rank_ic": rank_ic, "sharpe": sharpe} for h in ("1d", "5d", "10d", "20d")}

    beaten = {
        "model": metrics(0.03, 1.0),
        "ridge": metrics(0.02, 0.5),
        "lightgbm": metrics(0.01, 0.2),
        "no_graph": metrics(0.025, 0.9),
    }
    assert "**Met: all 18 checks.**" in goal_section(beaten)
    missed = {**beaten, "lightgbm": metrics(0.04, 0.2)}
    text = "\n".join(goal_section(missed))
    assert "**Not met: 3 of 18 checks fail**" in text
    assert "**no** (0.0300 vs 0.0400)" in text and "rank_ic 5d vs LightGBM" in text
    assert goal_section({"model": metrics(0.03, 1.0)}) == []  # nothing to compare with


def test_the_linear_head_adds_the_last_days_features_to_every_quantile() -> None:
    from inference.model import ATFTGATFAN
    from tests.inference.test_model import EDGE_DIM, N_FEATURES, N_SECTORS, batch
    from tests.inference.test_model import tiny_config as model_config

    torch.manual_seed(0)
    model = ATFTGATFAN(model_config(linear_head=True), N_FEATURES, EDGE_DIM, N_SECTORS).eval()
    assert model.linear is not None
    x, sector, edges, attr = batch()
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        without = model(x, sector, edges, attr).quantiles
        model.linear.weight[:, 3] = 2.0  # every horizon reads feature 3 of the last day
        read = model(x, sector, edges, attr).quantiles
    expected = (2.0 * x[:, -1, 3])[:, None, None].expand_as(read)
    torch.testing.assert_close(read - without, expected, rtol=1e-5, atol=1e-5)
    assert ATFTGATFAN(model_config(), N_FEATURES, EDGE_DIM, N_SECTORS).linear is None


def test_a_checkpoint_is_replaced_whole_never_left_half_written(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import inference.model.checkpoint as checkpoint_module

    bundle, _ = trained
    path = save_checkpoint(bundle_to_checkpoint(bundle), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def killed(tensors: object, filename: str, metadata: object) -> None:
        Path(filename).write_bytes(b"half a checkpoint")  # the write dies part-way
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(bundle_to_checkpoint(bundle), path)
    assert path.read_bytes() == before  # the old checkpoint still loads
    assert load_checkpoint(path).train_until == bundle_to_checkpoint(bundle).train_until
