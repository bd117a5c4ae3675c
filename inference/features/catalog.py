"""The feature catalog: every feature's name, family, warm-up and definition, in order.

The catalog is the single source for ``FEATURE_COLUMNS``, the warm-up masks the
pipeline applies and the generated docs/features.md, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

HORIZONS: tuple[int, ...] = (1, 5, 10, 20)
TARGET_COLUMNS: list[str] = [f"target_{h}d" for h in HORIZONS]
#: Sector33 value for a code that listed info does not know.
UNKNOWN_SECTOR = "unknown"


@dataclass(frozen=True)
class Feature:
    """One catalog entry: what it measures, from which family, and its warm-up.

    ``warmup`` counts the stock's own prior trading rows needed: the feature is null on
    the stock's first ``warmup`` rows (market-level features count market dates).
    """

    name: str
    group: str
    warmup: int
    description: str


BAD_INPUT_RULES: tuple[tuple[str, str], ...] = (
    (
        "missing column",
        "A required column (Date, Code, AdjustmentOpen/High/Low/Close, "
        "AdjustmentVolume) is absent: DataSchemaError naming it.",
    ),
    ("empty input", "No quote rows (e.g. an empty date range): DataSchemaError."),
    ("duplicate rows", "Two rows with the same (Code, Date): DataSchemaError naming one."),
    (
        "missing / bad close",
        "AdjustmentClose null, NaN, infinite or <= 0 (a halted or "
        "untraded day): the row is dropped with a DataQualityWarning; the stock's next "
        "return spans from its last valid close.",
    ),
    (
        "missing / bad open, high, low",
        "Null, NaN or <= 0: replaced by AdjustmentClose; "
        "High/Low widened to contain Open and Close (DataQualityWarning with the count).",
    ),
    (
        "missing / negative volume",
        "AdjustmentVolume null, NaN or < 0: set to 0 "
        "(DataQualityWarning). Zero volume is valid input; volume features use log1p and "
        "ratios guard their denominators, so it never produces NaN.",
    ),
    (
        "turnover",
        "TurnoverValue when present and >= 0, otherwise Close x Volume (raw), "
        "otherwise AdjustmentClose x AdjustmentVolume. The shared dataset has none.",
    ),
    (
        "missing days",
        "No filling: windows count the stock's own trading rows, so a "
        "return can span a gap; `gap_days` says how many market dates were skipped.",
    ),
    (
        "split days",
        "Returns and indicators use the split-adjusted Adjustment* columns, so "
        "a split (AdjustmentFactor != 1) is not a return.",
    ),
    (
        "code absent from listed_info",
        "Kept, with sector33 = 'unknown' and a "
        "DataQualityWarning naming the codes; its sector-relative features are null and the "
        "graph gives it no sector edges.",
    ),
    (
        "flat windows",
        "A ratio whose denominator is zero takes its neutral value "
        "(Bollinger/stochastic position 0 / 0.5, RSI 0.5, z-score 0, skewness/kurtosis/"
        "price-volume correlation 0, rank 0.5 for a lone stock); any remaining NaN or "
        "infinity is converted to null before output.",
    ),
)

_F: list[Feature] = []


def _feat(name: str, group: str, warmup: int, description: str) -> str:
    _F.append(Feature(name, group, warmup, description))
    return name


RET_WINDOWS = (1, 2, 3, 5, 10, 20, 60, 120)
VOL_WINDOWS = (5, 10, 20, 60, 120)
SMA_WINDOWS = (5, 10, 20, 60, 120)
EMA_WINDOWS = (5, 10, 20, 60)
RANGE_WINDOWS = (20, 60, 120)

# --- catalog (order here is FEATURE_COLUMNS' order) ------------------------------------
for _n in RET_WINDOWS:
    _feat(
        f"ret_{_n}d", "returns", _n, f"Simple return over {_n} trading rows: c_t / c_(t-{_n}) - 1."
    )
_feat("log_ret_1d", "returns", 1, "Log return: ln(c_t / c_(t-1)).")
_feat("mom_120_20", "returns", 120, "Momentum skipping the last month: c_(t-20) / c_(t-120) - 1.")
_feat("ret_overnight", "returns", 1, "Overnight return: o_t / c_(t-1) - 1.")
_feat("ret_intraday", "returns", 0, "Open-to-close return: c_t / o_t - 1.")
_feat("range_hl", "returns", 0, "Day range relative to close: (h - l) / c.")
_feat(
    "close_location", "returns", 0, "Close within the day's range: (c - l) / (h - l); 0.5 if h = l."
)
_feat("gap_days", "returns", 1, "Market trading dates skipped since this stock's previous row.")
for _n in VOL_WINDOWS:
    _feat(f"vol_{_n}d", "volatility", _n, f"Std of daily log returns over {_n} rows (daily units).")
_feat("vol_ratio_5_20", "volatility", 20, "vol_5d / vol_20d: short-term volatility regime.")
_feat("vol_ratio_20_60", "volatility", 60, "vol_20d / vol_60d.")
_feat("vol_parkinson_20", "volatility", 19, "Parkinson range volatility over 20 rows.")
_feat("vol_gk_20", "volatility", 19, "Garman-Klass OHLC volatility over 20 rows.")
_feat(
    "vol_down_20",
    "volatility",
    20,
    "Downside semi-deviation: sqrt(mean(min(r, 0)^2)) over 20 rows.",
)
_feat("vol_up_20", "volatility", 20, "Upside semi-deviation: sqrt(mean(max(r, 0)^2)) over 20 rows.")
_feat("skew_20", "volatility", 20, "Skewness of daily log returns over 20 rows.")
_feat("skew_60", "volatility", 60, "Skewness of daily log returns over 60 rows.")
_feat("kurt_60", "volatility", 60, "Excess kurtosis of daily log returns over 60 rows.")
_feat("ret_max_20", "volatility", 20, "Largest daily return in the last 20 rows.")
_feat("ret_min_20", "volatility", 20, "Smallest daily return in the last 20 rows.")
_feat("up_ratio_20", "volatility", 20, "Share of up days in the last 20 rows.")
for _n in SMA_WINDOWS:
    _feat(
        f"sma_gap_{_n}", "trend", _n - 1, f"Close over its {_n}-row simple moving average, minus 1."
    )
for _n in EMA_WINDOWS:
    _feat(
        f"ema_gap_{_n}",
        "trend",
        _n - 1,
        f"Close over its span-{_n} exponential moving average, minus 1.",
    )
_feat("sma_cross_5_20", "trend", 19, "SMA(5) / SMA(20) - 1.")
_feat("sma_cross_20_60", "trend", 59, "SMA(20) / SMA(60) - 1.")
_feat("sma_cross_60_120", "trend", 119, "SMA(60) / SMA(120) - 1.")
_feat("sma_slope_20_5", "trend", 24, "Five-row change of SMA(20): SMA20_t / SMA20_(t-5) - 1.")
_feat("macd", "trend", 25, "MACD (EMA12 - EMA26) divided by close.")
_feat("macd_signal", "trend", 33, "Span-9 EMA of macd.")
_feat("macd_hist", "trend", 33, "macd - macd_signal.")
_feat("bb_pos_20", "trend", 19, "Bollinger position: (c - SMA20) / (2 std20); 0 on a flat window.")
_feat("bb_width_20", "trend", 19, "Bollinger band width: 4 std20 / SMA20.")
for _n in RANGE_WINDOWS:
    _feat(f"dist_high_{_n}", "trend", _n - 1, f"Close over the {_n}-row high, minus 1 (<= 0).")
for _n in RANGE_WINDOWS:
    _feat(f"dist_low_{_n}", "trend", _n - 1, f"Close over the {_n}-row low, minus 1 (>= 0).")
_feat("stoch_k_14", "trend", 13, "Stochastic %K: (c - low14) / (high14 - low14); 0.5 if flat.")
_feat("stoch_d_14", "trend", 15, "Stochastic %D: 3-row mean of stoch_k_14.")
_feat("cci_20", "trend", 19, "Commodity channel index on typical price, std-scaled, / 100.")
for _n in (6, 14, 28):
    _feat(
        f"rsi_{_n}",
        "oscillators",
        _n,
        f"Wilder RSI({_n}) as a fraction in [0, 1]; 0.5 if no moves.",
    )
_feat("atr_14", "oscillators", 14, "Wilder average true range (14) / close.")
_feat("atr_20", "oscillators", 20, "Wilder average true range (20) / close.")
_feat("plus_di_14", "oscillators", 14, "Wilder +DI(14) as a fraction.")
_feat("minus_di_14", "oscillators", 14, "Wilder -DI(14) as a fraction.")
_feat("adx_14", "oscillators", 28, "Wilder ADX(14) as a fraction: trend strength.")
_feat("log_volume", "volume", 0, "ln(1 + split-adjusted volume).")
for _n in (5, 20, 60):
    _feat(f"volume_gap_{_n}", "volume", _n - 1, f"log_volume minus its {_n}-row mean.")
_feat("volume_z_20", "volume", 19, "z-score of log_volume over 20 rows; 0 on a flat window.")
_feat("volume_trend_5_20", "volume", 19, "Mean log_volume over 5 rows minus over 20 rows.")
_feat("volume_vol_20", "volume", 20, "Std of daily changes in log_volume over 20 rows.")
_feat("log_turnover", "volume", 0, "ln(1 + turnover in yen) (see the turnover rule).")
_feat("turnover_mean_20", "volume", 19, "Mean log_turnover over 20 rows: liquidity level.")
_feat("turnover_gap_20", "volume", 19, "log_turnover minus turnover_mean_20.")
_feat(
    "amihud_20", "volume", 20, "ln(1 + 1e9 mean(|r| / (turnover + 1))) over 20 rows: illiquidity."
)
_feat("zero_volume_ratio_20", "volume", 19, "Share of zero-volume rows in the last 20.")
_feat("pv_corr_20", "volume", 20, "Correlation of daily return and log-volume change over 20 rows.")
_feat("up_volume_ratio_20", "volume", 20, "Volume on up days / all volume, 20 rows; 0.5 if none.")
_feat(
    "mkt_ret_1d", "market", 1, "Universe index: equal-weighted mean ret_1d of all stocks that date."
)
_feat("mkt_ret_5d", "market", 5, "Universe index return over the last 5 market dates.")
_feat("mkt_ret_20d", "market", 20, "Universe index return over the last 20 market dates.")
_feat("mkt_ret_60d", "market", 60, "Universe index return over the last 60 market dates.")
_feat("mkt_vol_20", "market", 20, "Std of the universe index's daily return, 20 market dates.")
_feat("mkt_vol_60", "market", 60, "Std of the universe index's daily return, 60 market dates.")
_feat("mkt_trend_20", "market", 20, "Universe index level over its 20-date mean, minus 1.")
_feat("mkt_breadth", "market", 1, "Share of stocks with ret_1d > 0 that date.")
_feat("mkt_dispersion", "market", 1, "Cross-sectional std of ret_1d that date.")
_feat("beta_60", "market", 60, "OLS beta of ret_1d on mkt_ret_1d over 60 rows.")
_feat("beta_120", "market", 120, "OLS beta of ret_1d on mkt_ret_1d over 120 rows.")
_feat("corr_mkt_60", "market", 60, "Correlation of ret_1d with mkt_ret_1d over 60 rows.")
_feat("idio_vol_60", "market", 60, "Residual std of the 60-row market regression.")
for _n in (1, 5, 20, 60):
    _feat(
        f"excess_ret_{_n}d",
        "market",
        _n,
        f"ret_{_n}d minus the universe index return over the same rows.",
    )
for _n in (1, 5, 20):
    _feat(f"sec_ret_{_n}d", "sector", _n, f"Mean ret_{_n}d of the stock's Sector33 that date.")
for _n in (1, 5, 20, 60):
    _feat(f"rel_sec_ret_{_n}d", "sector", _n, f"ret_{_n}d minus its Sector33 mean that date.")
_feat("rel_sec_vol_20", "sector", 20, "vol_20d minus its Sector33 mean that date.")
_feat("rel_sec_volume_gap_20", "sector", 19, "volume_gap_20 minus its Sector33 mean that date.")
_feat("rel_sec_rsi_14", "sector", 14, "rsi_14 minus its Sector33 mean that date.")
_feat("sec_breadth", "sector", 1, "Share of the stock's Sector33 up that date.")
_feat("sec_size", "sector", 0, "ln(1 + number of the Sector33's stocks with a row that date).")
CROSS_SECTION_BASE = (
    "ret_1d", "ret_5d", "ret_20d", "ret_60d", "ret_120d", "vol_20d", "volume_gap_20",
    "rsi_14", "sma_gap_20", "log_turnover", "beta_60", "amihud_20",
)  # fmt: skip
_WARMUP = {f.name: f.warmup for f in _F}
for _b in CROSS_SECTION_BASE:
    _feat(
        f"rank_{_b}",
        "cross_section",
        _WARMUP[_b],
        f"Percentile rank of {_b} among stocks that date, in [0, 1].",
    )
for _b in CROSS_SECTION_BASE:
    _feat(
        f"z_{_b}",
        "cross_section",
        _WARMUP[_b],
        f"z-score of {_b} among stocks that date; 0 if no dispersion.",
    )

CATALOG: tuple[Feature, ...] = tuple(_F)
FEATURE_COLUMNS: list[str] = [f.name for f in CATALOG]
#: Warm-up rows per feature name.
WARMUP: dict[str, int] = {f.name: f.warmup for f in CATALOG}


_GROUP_TITLES = {
    "returns": "Returns and bar shape",
    "volatility": "Volatility and return distribution",
    "trend": "Trend: moving averages, MACD, Bollinger, ranges",
    "oscillators": "Oscillators: RSI, ATR, ADX",
    "volume": "Volume, turnover and liquidity",
    "market": "Market factor (universe index) and betas",
    "sector": "Sector33-relative",
    "cross_section": "Cross-sectional ranks and z-scores (per date)",
}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (``|`` would end the cell)."""
    return text.replace("|", "\\|")


def feature_catalog_markdown() -> str:
    """The feature catalog (docs/features.md), generated from :data:`CATALOG`."""
    lines = [
        "# Feature catalog",
        "",
        "<!-- Generated by `python -m inference.features > docs/features.md`; do not edit. -->",
        "",
        f"`inference.features.build_features(quotes, listed)` returns {len(FEATURE_COLUMNS)} "
        "features and "
        f"{len(TARGET_COLUMNS)} targets per (date, code), Float32, sorted by (date, code), "
        "with `date`, `code` and `sector33` first.",
        "",
        "Conventions:",
        "",
        "- Prices are the split-adjusted `Adjustment*` columns (c = close, o = open, "
        "h = high, l = low, v = volume); a split day is not a return.",
        "- Windows count the stock's own trading rows (a missing day is not filled).",
        "- A feature at date t reads only rows dated <= t: per-stock windows look back "
        "within the stock; market, sector and cross-sectional features are computed per "
        "date from that date's per-stock values. A Hypothesis property test changes rows "
        "after t and checks every feature at t is bitwise unchanged.",
        "- *Warm-up* is how many earlier rows of the stock a feature needs; the feature is "
        "null on the stock's first *warm-up* rows (for `mkt_*` features: the first market "
        "dates). Outside warm-up a feature is null only where a bad-input rule says so "
        "(unknown sector). No NaN or infinity is ever returned.",
        "- Computation: Polars (lazy) selects and cleans the input; the rolling work runs "
        "in grouped Numba kernels (`kernels/rolling.py`, each with a readable reference "
        "implementation held equal by property tests), split by stock across threads "
        "(`build_features(..., threads=N)`, same result for any N); per-date market, "
        "sector and cross-sectional statistics are grouped reductions over the date index. "
        "`benchmarks/features.py` measures the full shared dataset.",
        "",
        "## Targets",
        "",
        "| column | definition |",
        "|---|---|",
    ]
    for h in HORIZONS:
        lines.append(
            f"| `target_{h}d` | c_(t+{h}) / c_t - 1 over the stock's next {h} trading rows; "
            "null at the end of its history |"
        )
    for group, title in _GROUP_TITLES.items():
        members = [f for f in CATALOG if f.group == group]
        lines += ["", f"## {title} ({len(members)})", "", "| feature | warm-up | definition |"]
        lines.append("|---|---:|---|")
        lines += [f"| `{f.name}` | {f.warmup} | {_cell(f.description)} |" for f in members]
    lines += ["", "## Bad input", "", "| case | rule |", "|---|---|"]
    lines += [f"| {case} | {_cell(rule)} |" for case, rule in BAD_INPUT_RULES]
    return "\n".join(lines) + "\n"
