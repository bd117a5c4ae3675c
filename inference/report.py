"""Markdown + PNG report of a walk-forward evaluation (or of one checkpoint's test period).

The report states the data's survivorship bias up front, with the number of stocks and the
years of the data it was given: the shared data's universe is the TOPIX 500 as of 2017, so
every stock in it survived to 2017; results on such a universe flatter any strategy that
(implicitly) buys past losers or small caps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from inference.evaluation import DailySeries

if TYPE_CHECKING:
    from inference.interpret import Interpretation


@dataclass(frozen=True)
class DataCoverage:
    """What a report's numbers were computed from: how many stocks, over which days."""

    stocks: int
    first: date
    last: date


def survivorship(coverage: DataCoverage | None) -> str:
    """The survivorship caveat, stating the stocks and years of the data actually given."""
    observed = (
        f"The data given covers {coverage.stocks} stocks observed "
        f"{coverage.first.year}-{coverage.last.year} ({coverage.first}..{coverage.last}). "
        if coverage is not None
        else ""
    )
    return (
        f"**Survivorship bias.** {observed}If its universe is a list of today's "
        "constituents (the shared data is the 494 TOPIX 500 constituents *as of October "
        "2017*), every stock in it survived, and was large enough to be in the index, "
        "until then; delisted, merged and demoted companies are missing. Back-tests on such "
        "a universe overstate what a strategy would have earned in real time, most for "
        "signals that buy past losers (reversal) or favour stocks that later grew. Treat "
        "every number below as optimistic."
    )


LABELS = {
    "model": "ATFT-GAT-FAN",
    "no_graph": "same network, no graph",
    "ridge": "ridge (same features)",
    "lightgbm": "LightGBM (same features)",
    "momentum_20d": "20-day momentum",
    "reversal_5d": "5-day reversal",
}


def _fmt(value: float, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:.2f}%" if pct else f"{value:.4f}"


def metrics_table(metrics: dict[str, dict[str, dict[str, float]]], horizons: list[str]) -> str:
    lines = [
        "| signal | horizon | RankIC | IC | ICIR | hit rate | Sharpe | annual return "
        "| max drawdown | turnover/day |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in horizons:
        for name, per_h in metrics.items():
            m = per_h[h]
            lines.append(
                f"| {LABELS.get(name, name)} | {h} | {_fmt(m['rank_ic'])} | {_fmt(m['ic'])} "
                f"| {_fmt(m['icir'])} | {_fmt(m['hit_rate'], True)} | {m['sharpe']:.2f} "
                f"| {_fmt(m['annual_return'], True)} | {_fmt(m['max_drawdown'], True)} "
                f"| {_fmt(m['turnover'], True)} |"
            )
    return "\n".join(lines)


def summary_table(
    metrics: dict[str, dict[str, dict[str, float]]], horizons: list[str], key: str
) -> str:
    header = "| signal | " + " | ".join(horizons) + " |"
    lines = [header, "|---|" + "---:|" * len(horizons)]
    for name, per_h in metrics.items():
        cells = [
            f"{per_h[h][key]:.2f}" if key == "sharpe" else _fmt(per_h[h][key]) for h in horizons
        ]
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_cumulative(series: dict[str, dict[int, DailySeries]], horizon: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, per_h in series.items():
        s = per_h[horizon]
        ax.plot(s.dates, np.cumsum(s.net_return), label=LABELS.get(name, name), linewidth=1.2)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(f"Cumulative net long-short return (sum of daily returns), {horizon}-day signal")
    ax.set_ylabel("cumulative return")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rolling_rank_ic(
    series: dict[str, dict[int, DailySeries]], horizon: int, window: int, path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, per_h in series.items():
        s = per_h[horizon]
        values = np.nan_to_num(s.rank_ic, nan=0.0)
        if len(values) < window:
            continue
        rolling = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(s.dates[window - 1 :], rolling, label=LABELS.get(name, name), linewidth=1.2)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(f"Rolling {window}-day mean RankIC, {horizon}-day horizon")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


GOAL_HORIZONS = ("5d", "10d", "20d")
GOAL_CHECKS = (
    ("rank_ic", "model", "ridge"),
    ("rank_ic", "model", "lightgbm"),
    ("sharpe", "model", "ridge"),
    ("sharpe", "model", "lightgbm"),
    ("rank_ic", "model", "no_graph"),
    ("sharpe", "model", "no_graph"),
)


def goal_section(metrics: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown: does the network beat ridge, LightGBM and its no-graph twin at 5-20 days?

    The goal of issue 14, checked on whatever metrics are present; a missing signal or
    horizon leaves its checks out.
    """
    horizons = [h for h in GOAL_HORIZONS if all(h in m for m in metrics.values())]
    checks = [c for c in GOAL_CHECKS if c[1] in metrics and c[2] in metrics]
    if not horizons or not checks:
        return []
    parts = [
        "## Against the goal",
        "",
        "The network should beat ridge and LightGBM in mean RankIC and net Sharpe at "
        "5, 10 and 20 days, and beat the same network without its graph. Each cell: "
        "network vs the other.",
        "",
        "| check | " + " | ".join(horizons) + " |",
        "|---|" + "---|" * len(horizons),
    ]
    failed = []
    for key, ours, other in checks:
        cells = []
        for h in horizons:
            a, b = metrics[ours][h][key], metrics[other][h][key]
            won = math.isfinite(a) and math.isfinite(b) and a > b
            if not won:
                failed.append(f"{key} {h} vs {LABELS.get(other, other)}")
            fmt = "{:.2f}" if key == "sharpe" else "{:.4f}"
            cells.append(f"{'yes' if won else '**no**'} ({fmt.format(a)} vs {fmt.format(b)})")
        name = "RankIC" if key == "rank_ic" else "net Sharpe"
        parts.append(f"| {name} > {LABELS.get(other, other)} | " + " | ".join(cells) + " |")
    total = len(checks) * len(horizons)
    parts += [
        "",
        f"**Met: all {total} checks.**"
        if not failed
        else f"**Not met: {len(failed)} of {total} checks fail** ({'; '.join(failed)}).",
        "",
    ]
    return parts


def _top(shares: dict[str, float], k: int) -> str:
    best = sorted(shares.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"`{name}` {share:.1%}" for name, share in best)


def interpretation_section(
    view: Interpretation,
    horizons: list[str],
    lightgbm: list[dict[str, float]] | None = None,
    names: dict[str, str] | None = None,
    k: int = 8,
) -> list[str]:
    """Markdown: top features, attention over the window, gates and peers of large stocks."""
    names = names or {}

    def label(code: str) -> str:
        return f"{code} {names[code]}" if code in names else code

    uniform = 1 / max(len(view.variable_weights), 1)
    parts = [
        "## What the network looks at",
        "",
        f"Read from the network on {view.dates} evenly spaced scored dates (up to 12 a "
        "fold; see `inference/interpret.py` for the definitions).",
        "",
        "**Variable selection** (TFT softmax weights, mean over stocks, window days and "
        f"dates; shared by all horizons; uniform would be {uniform:.1%} "
        f"each): {_top(view.variable_weights, k)}.",
        "",
        "**Per horizon** (share of the median forecast's |gradient x input|), beside "
        "LightGBM's share of split gain on the same features:",
        "",
        "| horizon | network (gradient x input) | LightGBM (gain) |",
        "|---|---|---|",
    ]
    for i, h in enumerate(horizons):
        gain = _top(lightgbm[i], 5) if lightgbm and i < len(lightgbm) and lightgbm[i] else "n/a"
        parts.append(f"| {h} | {_top(view.saliency.get(h, {}), 5)} | {gain} |")
    lags = view.attention_by_lag
    recent = ", ".join(f"lag {i}: {w:.1%}" for i, w in enumerate(lags[:5]))
    parts += [
        "",
        f"**Attention over the window** (last day's query, mean over heads; lag 0 is the "
        f"forecast date, {len(lags)} days): {recent}; older days together "
        f"{sum(lags[5:]):.1%}.",
        "",
    ]
    if view.graph_gates:
        gates = ", ".join(f"{g:+.3f}" for g in view.graph_gates)
        parts += [
            f"**Graph gates** (tanh of each GAT layer's gate; 0 = graph unused, 1 = fully "
            f"used): {gates}.",
            "",
        ]
    if view.peers:
        parts += [
            "**Most-attended peers** of the largest stocks by trading value (share of the "
            "last GAT layer's attention, self excluded, mean over heads and dates):",
            "",
            "| stock | peers |",
            "|---|---|",
        ]
        for code, peers in view.peers.items():
            listed = ", ".join(f"{label(p)} {w:.1%}" for p, w in peers) or "none"
            parts.append(f"| {label(code)} | {listed} |")
        parts.append("")
    return parts


def write_report(
    path: Path,
    *,
    metrics: dict[str, dict[str, dict[str, float]]],
    fold_metrics: dict[str, dict[str, dict[str, dict[str, float]]]],
    series: dict[str, dict[int, DailySeries]],
    folds: list[dict[str, str]],
    horizons: tuple[int, ...],
    info: dict[str, Any],
    rolling_window: int,
    interpretation: Interpretation | None = None,
    lightgbm_importance: list[dict[str, float]] | None = None,
    stock_names: dict[str, str] | None = None,
    coverage: DataCoverage | None = None,
    title: str = "Walk-forward results: ATFT-GAT-FAN on Japanese equities",
) -> list[Path]:
    """Write ``path`` (Markdown) and its plots into ``path.parent / path.stem``.

    With one fold (``evaluate``: a checkpoint's training span and the period scored) the
    per-fold section would repeat the totals, so it is left out.
    """
    plot_dir = path.parent / path.stem
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = [path]
    names = [f"{h}d" for h in horizons]
    scope = "all folds" if len(folds) > 1 else "test period"
    parts = [
        f"# {title}",
        "",
        survivorship(coverage),
        "",
        "## Run",
        "",
        "```",
        str(info.get("command", "")),
        "```",
        "",
    ]
    parts += [f"- {k}: {v}" for k, v in info.items() if k != "command"]
    parts += ["", "Folds (train / validation / test; gaps are the purge/embargo):", ""]
    parts += ["| fold | train | validation | test |", "|---|---|---|---|"]
    parts += [f"| {f['fold']} | {f['train']} | {f['validation']} | {f['test']} |" for f in folds]
    parts += [
        "",
        f"## RankIC (mean over test days, {scope})",
        "",
        summary_table(metrics, names, "rank_ic"),
        "",
        f"## Long-short Sharpe (net of costs, {scope})",
        "",
        summary_table(metrics, names, "sharpe"),
        "",
        *goal_section(metrics),
        f"## All metrics, {scope}",
        "",
        metrics_table(metrics, names),
        "",
    ]
    if len(fold_metrics) > 1:
        parts += ["## Per fold: RankIC / Sharpe", ""]
        for fold, fm in fold_metrics.items():
            parts += [f"### {fold}", "", summary_table(fm, names, "rank_ic"), ""]
            parts += [summary_table(fm, names, "sharpe"), ""]
    if interpretation is not None:
        parts += interpretation_section(interpretation, names, lightgbm_importance, stock_names)
    parts += ["## Plots", ""]
    for h in horizons:
        cumulative = plot_dir / f"cumulative_long_short_{h}d.png"
        rolling = plot_dir / f"rolling_rank_ic_{h}d.png"
        plot_cumulative(series, h, cumulative)
        plot_rolling_rank_ic(series, h, rolling_window, rolling)
        written += [cumulative, rolling]
        parts += [
            f"![cumulative long-short {h}d]({plot_dir.name}/{cumulative.name})",
            "",
            f"![rolling RankIC {h}d]({plot_dir.name}/{rolling.name})",
            "",
        ]
    path.write_text("\n".join(parts) + "\n")
    return written
