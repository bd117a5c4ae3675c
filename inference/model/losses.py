"""Training losses: pinball loss for the quantiles and a differentiable rank-IC term.

Quantile loss alone fits each stock's return distribution but is indifferent to how
stocks are ordered against each other, which is what a long-short book trades on.  The
rank term rewards the median forecast for correlating with the cross-sectional *rank* of
realised returns (targets are ranked, so it needs no differentiable sort).
"""

from __future__ import annotations

import torch


def quantile_loss(
    predicted: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor
) -> torch.Tensor:
    """Mean pinball loss over observed targets.

    ``predicted`` ``[N, H, Q]``, ``target`` ``[N, H]`` with NaN where unknown,
    ``quantiles`` ``[Q]``.
    """
    observed = ~torch.isnan(target)
    if not observed.any():
        return predicted.sum() * 0.0
    error = torch.nan_to_num(target).unsqueeze(-1) - predicted  # [N, H, Q]
    pinball = torch.maximum(quantiles * error, (quantiles - 1.0) * error)
    mask = observed.unsqueeze(-1).to(pinball.dtype)
    return (pinball * mask).sum() / (mask.sum() * quantiles.numel())


def _gaussian_rank(values: torch.Tensor) -> torch.Tensor:
    ranks = values.argsort().argsort().to(torch.float32)
    return (ranks - ranks.mean()) / ranks.std(correction=0).clamp_min(1e-6)


def rank_correlation_loss(
    signal: torch.Tensor, target: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """``1 - mean`` Pearson correlation of ``signal`` with the rank of ``target``.

    Computed per cross-section (``groups`` ``[N]`` holds the date id of each node) and per
    horizon; ``signal`` and ``target`` are ``[N, H]``.  Cross-sections with fewer than 5
    observed stocks are skipped.
    """
    correlations = []
    for group in torch.unique(groups):
        in_group = groups == group
        for h in range(signal.shape[1]):
            y = target[in_group, h]
            observed = ~torch.isnan(y)
            if int(observed.sum()) < 5:
                continue
            s = signal[in_group, h][observed].float()
            r = _gaussian_rank(y[observed])
            s = s - s.mean()
            corr = (s * r).mean() / (s.pow(2).mean().sqrt() + 1e-6)
            correlations.append(corr)
    if not correlations:
        return signal.sum() * 0.0
    return 1.0 - torch.stack(correlations).mean()
