"""Per-epoch schedules: learning-rate factors (multiplied by the base lr, for ``LambdaLR``)
and the drop-path ramp of the final training.

Epochs are 0-based; the value of epoch e is used for all of epoch e.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from pcdarts.config import SCHEDULES

LINEAR_TAIL_EPOCHS = 5  # the reference's linear decay uses a smaller slope for its last 5 epochs


def _cosine(epoch: int, epochs: int, min_factor: float) -> float:
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _linear(epoch: int, epochs: int, min_factor: float) -> float:
    """PC-DARTS train_imagenet.py ``adjust_lr``: linear to ~0, gentler over the last epochs."""
    tail = min(LINEAR_TAIL_EPOCHS, epochs - 1)
    if epochs - epoch > tail:
        return (epochs - tail - epoch) / (epochs - tail)
    return (epochs - epoch) / ((epochs - tail) * max(tail, 1))


def lr_factor(
    schedule: str, epochs: int, warmup_epochs: int = 0, min_factor: float = 0.0
) -> Callable[[int], float]:
    """Factor of epoch e: the schedule, times (e + 1) / warmup during the linear warm-up."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    base = partial(
        _cosine if schedule == "cosine" else _linear, epochs=epochs, min_factor=min_factor
    )
    return partial(_warmed, base=base, warmup_epochs=warmup_epochs)


def _warmed(epoch: int, base: Callable[[int], float], warmup_epochs: int) -> float:
    factor = base(epoch)
    if epoch < warmup_epochs:
        factor *= (epoch + 1) / warmup_epochs
    return factor


def drop_path_prob(final: float, epoch: int, epochs: int) -> float:
    """The drop-path probability of epoch e, ramped linearly from 0 towards ``final``
    (method §6; the reference's ``drop_path_prob * epoch / epochs``)."""
    return final * epoch / epochs
