"""Error rates and running averages."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pcdarts.distributed import reduce_sums


@torch.no_grad()
def topk_errors(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k error rates in percent. logits: (N, classes), target: (N,).

    k larger than the number of classes is clamped (top-5 of 3 classes is top-3).
    """
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (N, maxk)
    correct = pred.eq(target.unsqueeze(1))  # (N, maxk)
    n = target.shape[0]
    return [100.0 * (1.0 - correct[:, : min(k, maxk)].any(dim=1).sum().item() / n) for k in ks]


class Average:
    """Sample-weighted running mean."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += value * n
        self.count += n

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def global_mean(self, device: torch.device) -> float:
        """The mean over every rank's samples (the local mean in a single process)."""
        total, count = reduce_sums([self.total, self.count], device)
        return total / count if count else math.nan


@torch.no_grad()
def alpha_entropy(alphas: Tensor) -> float:
    """Mean entropy (nats) of the per-edge op distributions softmax(alphas). alphas: (E, ops)."""
    p = torch.softmax(alphas.detach().float(), dim=-1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean())
