"""Derivation (method §4): the discrete cells a supernet's architecture weights select.

:func:`edge_weights` is edge normalisation (method §3), which the supernet's forward and the
derivation share; :func:`derive_genotype` follows the reference (float32, same
tie-breaking); :func:`derivation_choices` and :func:`derivation_margin` say how clearly it
decided, and :func:`stable_since` since when it has not changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pcdarts.genotypes import Genotype
from pcdarts.ops import PRIMITIVES
from pcdarts.space import steps_for_edges


def edge_weights(betas: Tensor) -> Tensor:
    """Edge normalization (method §3): softmax of betas within each node's incoming edges.

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
    """Derive the discrete cells from raw (pre-softmax) architecture weights (method §4).

    alphas_*: (E, 8); betas_*: (E,) or None when edge normalization is off. Scores are
    computed in float32 as in the reference: edge score = max over ops != none of
    softmax(alpha) * softmax_node(beta); the two best edges per node are kept and the
    best op other than none is chosen on each.
    """
    genes = []
    for alphas, betas in ((alphas_normal, betas_normal), (alphas_reduce, betas_reduce)):
        weights, steps = _ranked_weights(alphas, betas)
        genes.append(_parse_cell(weights, steps))
    concat = tuple(range(2, 2 + steps))
    return Genotype(tuple(genes[0]), concat, tuple(genes[1]), concat)


@dataclass(frozen=True)
class Choice:
    """One (op, input) pair the derivation keeps, and by how much it won (method §4)."""

    cell: str  # "normal" or "reduce"
    node: int  # intermediate node, 0-based
    op: str
    input: int
    lead: float  # over the runner-up op and over the node's best dropped edge, the smaller


def derivation_choices(
    alphas_normal: Tensor | np.ndarray,
    alphas_reduce: Tensor | np.ndarray,
    betas_normal: Tensor | np.ndarray | None = None,
    betas_reduce: Tensor | np.ndarray | None = None,
) -> list[Choice]:
    """Every pair :func:`derive_genotype` keeps, in its order, with its lead.

    Leads are in the quantity the derivation ranks (softmax(alpha) * edge weight): the
    pair's op over its edge's second-best op other than none, and, at nodes with more than
    two inputs, its edge over the best edge the node drops. Near 0, float noise picks it.
    """
    choices = []
    for cell, alphas, betas in (
        ("normal", alphas_normal, betas_normal),
        ("reduce", alphas_reduce, betas_reduce),
    ):
        weights, steps = _ranked_weights(alphas, betas)
        ops = [k for k in range(weights.shape[1]) if k != PRIMITIVES.index("none")]
        start = 0
        for node in range(steps):
            w = weights[start : start + node + 2][:, ops]  # (n_in, ops without none)
            scores = w.max(axis=1)
            order = np.argsort(-scores, kind="stable")  # ties: the lower input, as _parse_cell
            dropped = scores[order[2]] if len(order) > 2 else -np.inf
            for i in order[:2]:
                best, second = np.sort(w[i])[::-1][:2]
                lead = min(best - second, scores[i] - dropped)
                op = PRIMITIVES[ops[int(np.argmax(w[i]))]]  # first maximum: the lower index
                choices.append(Choice(cell, node, op, int(i), float(lead)))
            start += node + 2
    return choices


def derivation_margin(
    alphas_normal: Tensor | np.ndarray,
    alphas_reduce: Tensor | np.ndarray,
    betas_normal: Tensor | np.ndarray | None = None,
    betas_reduce: Tensor | np.ndarray | None = None,
) -> float:
    """How clearly the derivation decides: the smallest lead of a choice over its runner-up
    (:func:`derivation_choices`), over both cells. Near 0, float noise picks the cell; a
    clear search leads every choice by a margin (method §4).
    """
    choices = derivation_choices(alphas_normal, alphas_reduce, betas_normal, betas_reduce)
    return min(c.lead for c in choices)


def stable_since(genotypes: Sequence[Genotype]) -> int:
    """Index of the first of ``genotypes`` (one per epoch) from which all equal the last."""
    since = len(genotypes) - 1
    while since > 0 and genotypes[since - 1] == genotypes[-1]:
        since -= 1
    return max(since, 0)


def _ranked_weights(
    alphas: Tensor | np.ndarray, betas: Tensor | np.ndarray | None
) -> tuple[np.ndarray, int]:
    """(E, ops) float32 softmax(alpha) * edge weight, as the reference ranks them; steps."""
    a = torch.softmax(_as_float32(alphas), dim=-1)
    if a.shape[-1] != len(PRIMITIVES):
        raise ValueError(f"alphas have {a.shape[-1]} columns, expected {len(PRIMITIVES)}")
    steps = steps_for_edges(a.shape[0])
    if betas is not None:
        a = a * edge_weights(_as_float32(betas)).unsqueeze(1)
    return a.numpy(), steps
