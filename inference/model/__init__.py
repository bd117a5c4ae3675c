"""ATFT-GAT-FAN network: FAN normalisation, TFT temporal encoder, GATv2, quantile heads."""

from inference.model.fan import FrequencyAdaptiveNormalization
from inference.model.losses import quantile_loss, rank_correlation_loss
from inference.model.network import (
    ATFTGATFAN,
    Forecast,
    Network,
    SeedEnsemble,
    build_network,
    parameter_count,
)

__all__ = [
    "ATFTGATFAN",
    "Forecast",
    "FrequencyAdaptiveNormalization",
    "Network",
    "SeedEnsemble",
    "build_network",
    "parameter_count",
    "quantile_loss",
    "rank_correlation_loss",
]
