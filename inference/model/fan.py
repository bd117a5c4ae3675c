"""Frequency Adaptive Normalization (Ye et al., NeurIPS 2024).

Rolling z-scores only remove a window's mean and scale; financial features also carry
slow cycles and trends whose frequency content shifts over time.  FAN takes each input
window to the frequency domain, removes its K dominant components (the "main",
non-stationary part), lets the backbone see only the stationary residual, and has a
small network predict how the removed components continue over the forecast horizon so
that they can be added back to the forecast.
"""

from __future__ import annotations

import torch
from torch import nn


class FrequencyAdaptiveNormalization(nn.Module):
    """Per-window, per-feature removal of the top-K rfft components and their forecast.

    Shapes: ``x`` is ``[N, L, F]`` (stocks, lookback, features).  The main-component
    predictor is channel-independent (shared across features), as in the paper: it maps
    the concatenation of the window and its main component (``2L`` values) to the next
    ``horizon_steps`` values of the main component.
    """

    def __init__(self, lookback: int, horizon_steps: int, top_k: int, hidden: int) -> None:
        super().__init__()
        if top_k > lookback // 2 + 1:
            raise ValueError(f"top_k={top_k} exceeds the {lookback // 2 + 1} rfft bins")
        self.lookback = lookback
        self.horizon_steps = horizon_steps
        self.top_k = top_k
        self.predictor = nn.Sequential(
            nn.Linear(2 * lookback, hidden),
            nn.GELU(),
            nn.Linear(hidden, horizon_steps),
        )

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split ``x`` into ``(residual, main)`` with ``residual + main == x``."""
        if x.shape[1] != self.lookback:
            raise ValueError(f"window length {x.shape[1]} != lookback {self.lookback}")
        x32 = x.float()
        series = x32.transpose(1, 2).contiguous()  # [N, F, L]: FFT over contiguous memory
        spectrum = torch.fft.rfft(series, dim=-1)
        top = spectrum.abs().topk(self.top_k, dim=-1).indices
        keep = torch.zeros_like(spectrum.real, dtype=torch.bool).scatter_(-1, top, True)
        main = torch.fft.irfft(spectrum * keep, n=self.lookback, dim=-1).transpose(1, 2)
        return x32 - main, main

    def predict_main(self, x: torch.Tensor, main: torch.Tensor) -> torch.Tensor:
        """Forecast the main component for the next ``horizon_steps`` days: ``[N, H, F]``."""
        joined = torch.cat([main, x.float()], dim=1).transpose(1, 2)  # [N, F, 2L]
        return self.predictor(joined).transpose(1, 2)

    @staticmethod
    def denormalize(residual: torch.Tensor, main: torch.Tensor) -> torch.Tensor:
        """Add (predicted) main components back; the inverse of :meth:`normalize`."""
        return residual + main
