"""Genotypes: the frozen description of a cell pair, the published ones, and derivation.

A genotype lists, for each intermediate node of a cell, two ``(op, input)`` pairs
(strongest edge first); inputs 0 and 1 are the cell inputs, 2.. the earlier nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcdarts.ops import PRIMITIVES

Gene = tuple[tuple[str, int], ...]


def _as_gene(pairs: Sequence[Sequence[Any]]) -> Gene:
    gene = tuple((str(op), int(idx)) for op, idx in pairs)
    for op, _ in gene:
        if op not in PRIMITIVES or op == "none":
            raise ValueError(f"genotype op {op!r} is not a DARTS primitive other than 'none'")
    return gene


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell; JSON round-trips through ``to_dict``/``from_dict``."""

    normal: Gene
    normal_concat: tuple[int, ...]
    reduce: Gene
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("normal", "reduce"):
            gene = getattr(self, field)
            object.__setattr__(self, field, _as_gene(gene))
            for node, (_, idx) in enumerate(getattr(self, field)):
                if not 0 <= idx < 2 + node // 2:
                    raise ValueError(f"{field}[{node}] reads state {idx}, not yet computed")
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))

    def to_dict(self) -> dict[str, list[Any]]:
        return {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Genotype:
        missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(d)
        if missing:
            raise ValueError(f"genotype dict lacks {sorted(missing)}")
        return cls(d["normal"], d["normal_concat"], d["reduce"], d["reduce_concat"])


_CONCAT = (2, 3, 4, 5)

GENOTYPES: dict[str, Genotype] = {
    # DARTS (2nd order) CIFAR-10 cell, Liu et al. 2019; for comparison (SPEC §4).
    "darts_v2": Genotype(
        normal=(
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ),
        normal_concat=_CONCAT,
        reduce=(
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ),
        reduce_concat=_CONCAT,
    ),
    # PC-DARTS, searched on CIFAR-10 (SPEC §4, the cell retrained in the paper).
    "pc_darts_cifar": Genotype(
        normal=(
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 0),
            ("dil_conv_3x3", 1),
        ),
        normal_concat=_CONCAT,
        reduce=(
            ("sep_conv_5x5", 1),
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
        ),
        reduce_concat=_CONCAT,
    ),
    # PC-DARTS, searched on ImageNet (SPEC §4).
    "pc_darts_imagenet": Genotype(
        normal=(
            ("skip_connect", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("dil_conv_5x5", 4),
        ),
        normal_concat=_CONCAT,
        reduce=(
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 3),
        ),
        reduce_concat=_CONCAT,
    ),
}


def get_genotype(name: str) -> Genotype:
    """Look up a published genotype by name."""
    try:
        return GENOTYPES[name]
    except KeyError:
        raise KeyError(f"unknown genotype {name!r}; known: {', '.join(GENOTYPES)}") from None


def steps_for_edges(num_edges: int) -> int:
    """Number of intermediate nodes n of a cell with n(n+3)/2 edges (14 -> 4)."""
    steps = 0
    while steps * (steps + 3) // 2 < num_edges:
        steps += 1
    if steps * (steps + 3) // 2 != num_edges:
        raise ValueError(f"{num_edges} edges is not n(n+3)/2 for any number of nodes n")
    return steps


def edge_weights(betas: Tensor) -> Tensor:
    """Edge normalization (SPEC §3): softmax of betas within each node's incoming edges.

    betas: (E,) raw values, E = n(n+3)/2 -> (E,) weights summing to 1 per node.
    """
    steps = steps_for_edges(betas.shape[0])
    chunks, start = [], 0
    for node in range(steps):
        end = start + node + 2
        chunks.append(torch.softmax(betas[start:end], dim=-1))
        start = end
    return torch.cat(chunks, dim=0)


def _as_float32(x: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x)).float()


def _parse_cell(weights: np.ndarray, steps: int) -> list[tuple[str, int]]:
    """weights: (E, ops) float32 = softmax(alpha) * edge weight; the reference's ``_parse``."""
    none = PRIMITIVES.index("none")
    gene: list[tuple[str, int]] = []
    start = 0
    for node in range(steps):
        n_in = node + 2
        w = weights[start : start + n_in]
        ops = [k for k in range(w.shape[1]) if k != none]
        scores = [max(w[i][k] for k in ops) for i in range(n_in)]
        # Strongest edges first; sorted() is stable, so ties keep the lower input index.
        edges = sorted(range(n_in), key=lambda i: -scores[i])[:2]
        for i in edges:
            best = ops[0]
            for k in ops[1:]:
                if w[i][k] > w[i][best]:  # strict: ties go to the lower primitive index
                    best = k
            gene.append((PRIMITIVES[best], i))
        start += n_in
    return gene


def derive_genotype(
    alphas_normal: Tensor | np.ndarray,
    alphas_reduce: Tensor | np.ndarray,
    betas_normal: Tensor | np.ndarray | None = None,
    betas_reduce: Tensor | np.ndarray | None = None,
) -> Genotype:
    """Derive the discrete cells from raw (pre-softmax) architecture weights (SPEC §4).

    alphas_*: (E, 8); betas_*: (E,) or None when edge normalization is off. Scores are
    computed in float32 as in the reference: edge score = max over ops != none of
    softmax(alpha) * softmax_node(beta); the two best edges per node are kept and the
    best op other than none is chosen on each.
    """
    genes = []
    for alphas, betas in ((alphas_normal, betas_normal), (alphas_reduce, betas_reduce)):
        a = torch.softmax(_as_float32(alphas), dim=-1)
        if a.shape[-1] != len(PRIMITIVES):
            raise ValueError(f"alphas have {a.shape[-1]} columns, expected {len(PRIMITIVES)}")
        steps = steps_for_edges(a.shape[0])
        if betas is not None:
            a = a * edge_weights(_as_float32(betas)).unsqueeze(1)
        genes.append(_parse_cell(a.numpy(), steps))
    concat = tuple(range(2, 2 + steps))
    return Genotype(tuple(genes[0]), concat, tuple(genes[1]), concat)
