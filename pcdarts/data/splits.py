"""Search splits (method §5): weights/architecture indices, and their JSON form."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from pcdarts.config import CIFAR_ARCH_FRACTION, IMAGENET_ARCH_FRACTION, IMAGENET_WEIGHT_FRACTION

FRACTION_DECIMALS = 9  # rounding before floor(), so 0.7 * 10 is 7 and not 6.999...


def _floor_fraction(fraction: float, n: int) -> int:
    """floor(fraction * n), immune to float noise such as 0.7 * 10 = 6.999..."""
    return math.floor(round(fraction * n, FRACTION_DECIMALS))


def split_weight_arch(
    n: int, arch_fraction: float = CIFAR_ARCH_FRACTION, seed: int = 0, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 search split (method §5): disjoint (weight, arch) index arrays, sorted.

    The weight split takes floor((1 - arch_fraction) * n) samples, as the reference
    (``split = floor(portion * num_train)``). The reference takes the first part for
    weights and the rest for arch, unshuffled; we draw a seeded permutation instead, so the
    split does not follow the file order. ``shuffle=False`` reproduces the reference.
    """
    if not 0.0 < arch_fraction < 1.0:
        raise ValueError(f"arch_fraction must lie in (0, 1), got {arch_fraction}")
    n_weight = _floor_fraction(1.0 - arch_fraction, n)
    if n_weight < 1 or n_weight >= n:
        raise ValueError(f"cannot split {n} samples with arch_fraction {arch_fraction}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return np.sort(order[:n_weight]).astype(np.int64), np.sort(order[n_weight:]).astype(np.int64)


def split_per_class(
    targets: Sequence[int] | np.ndarray,
    weight_fraction: float = IMAGENET_WEIGHT_FRACTION,
    arch_fraction: float = IMAGENET_ARCH_FRACTION,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet search subsets (method §5): disjoint (weight, arch) index arrays, sorted.

    Per class with n samples: floor(weight_fraction * n) for weights and another
    floor(arch_fraction * n) for arch, each at least one when n >= 2 (a class of one
    sample goes to weights). Seeded: one numpy Generator visits the classes in label order.
    """
    if weight_fraction <= 0 or arch_fraction <= 0 or weight_fraction + arch_fraction > 1:
        raise ValueError(
            f"need positive fractions summing to at most 1, got {weight_fraction} + {arch_fraction}"
        )
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    weight: list[np.ndarray] = []
    arch: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        n_arch = 0 if n < 2 else min(max(1, _floor_fraction(arch_fraction, n)), n - 1)
        n_weight = min(max(1, _floor_fraction(weight_fraction, n)), n - n_arch)
        weight.append(members[:n_weight])
        arch.append(members[n_weight : n_weight + n_arch])
    as_index = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64)  # noqa: E731
    return as_index(weight), as_index(arch)


def class_counts(targets: Sequence[int] | np.ndarray) -> dict[int, int]:
    """Number of samples per label, labels ascending."""
    counts = Counter(int(y) for y in np.asarray(targets).ravel())
    return dict(sorted(counts.items()))


def indices_to_json(weight_idx: np.ndarray, arch_idx: np.ndarray, meta: dict[str, Any]) -> str:
    """A split as JSON text (``{"meta", "weight", "arch"}``), byte-stable for equal input."""
    if np.intersect1d(weight_idx, arch_idx).size:
        raise ValueError("weight and arch indices overlap")
    payload = {
        "meta": meta,
        "weight": [int(i) for i in weight_idx],
        "arch": [int(i) for i in arch_idx],
    }
    return json.dumps(payload, sort_keys=True, indent=1) + "\n"


def indices_from_json(text: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Inverse of :func:`indices_to_json`: (weight (Nw,) int64, arch (Na,) int64, meta)."""
    payload = json.loads(text)
    weight = np.asarray(payload["weight"], dtype=np.int64)
    arch = np.asarray(payload["arch"], dtype=np.int64)
    if np.intersect1d(weight, arch).size or (weight < 0).any() or (arch < 0).any():
        raise ValueError("split file holds overlapping or negative indices")
    return weight, arch, dict(payload["meta"])
