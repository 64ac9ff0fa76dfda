"""What a search's own numbers do not show: the signals of a deciding or collapsing search.

Per epoch, from the derived genotype (method §4): the skip connections and parameter-free
ops of each cell (DARTS+'s collapse signal) and how many ``(op, input)`` pairs changed since
the previous epoch. Optionally, the dominant eigenvalue of the Hessian of the arch-split
loss with respect to the architecture weights (alphas and betas), Zela et al.'s collapse
indicator ("Understanding and Robustifying DARTS", ICLR 2020), by power iteration on
Hessian-vector products (double backprop) on one fixed held-out batch.

Everything here observes: the eigenvalue is computed on the model as it is, with the
search's loss (training-mode BatchNorm, batch statistics, as the architecture step sees
it), and puts back every buffer and mode it touched; it draws its batch and its start
vector from its own generators and leaves every global random state as it found it.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from pcdarts.genotypes import Genotype
from pcdarts.ops import PRIMITIVES
from pcdarts.space import INPUTS_PER_NODE, steps_for_edges

SKIP = "skip_connect"
# Ops without weights, by name, as DARTS+ and RobustDARTS count them ('none' is never
# derived). A stride-2 skip_connect of a reduction cell is a FactorizedReduce, which has
# weights; it is counted here by its name all the same, as those papers do.
PARAMETER_FREE = ("max_pool_3x3", "avg_pool_3x3", SKIP)
CELLS = ("normal", "reduce")


def op_counts(genotype: Genotype) -> dict[str, int]:
    """Skip connections and parameter-free ops of each derived cell.

    Keys: ``skip_connections_<cell>``, ``param_free_<cell>`` for ``cell`` in normal, reduce.
    """
    counts: dict[str, int] = {}
    for cell in CELLS:
        ops = [op for op, _ in getattr(genotype, cell)]
        counts[f"skip_connections_{cell}"] = sum(op == SKIP for op in ops)
        counts[f"param_free_{cell}"] = sum(op in PARAMETER_FREE for op in ops)
    return counts


def changed_pairs(previous: Genotype | None, current: Genotype) -> dict[str, int]:
    """How many ``(op, input)`` pairs of ``current`` each node did not hold in ``previous``.

    Compared node by node (a node's two pairs as a multiset: their order, strongest edge
    first, may swap without a change). Keys ``changed_pairs_<cell>``; 0 without a previous.
    """
    changed: dict[str, int] = {}
    for cell in CELLS:
        now = getattr(current, cell)
        before = getattr(previous, cell) if previous is not None else now
        count = 0
        for start in range(0, len(now), INPUTS_PER_NODE):
            kept = Counter(now[start : start + INPUTS_PER_NODE])
            kept &= Counter(before[start : start + INPUTS_PER_NODE])
            count += INPUTS_PER_NODE - sum(kept.values())
        changed[f"changed_pairs_{cell}"] = count
    return changed


def edge_names(num_edges: int) -> list[str]:
    """``node<j>_in<i>`` for every edge of a cell, in alpha-row order (node j reads input i)."""
    steps = steps_for_edges(num_edges)
    return [f"node{node}_in{state}" for node in range(steps) for state in range(node + 2)]


EDGE_WEIGHT = "edge_weight"  # the series of an edge's softmaxed beta (method §3)
EIGENVALUE = "hessian_eigenvalue"  # the panel and series of the Hessian's largest eigenvalue


def _edge_values(row: Mapping[str, Any]) -> Iterator[tuple[str, str, str, float]]:
    """(cell, edge, op or ``edge_weight``, value) of one history row's softmaxed alphas and
    edge weights (none when edge normalisation is off)."""
    for cell in CELLS:
        alphas = row[f"alphas_{cell}"]  # (E, 8), softmaxed per edge
        betas = row.get(f"betas_{cell}")  # (E,) edge weights
        for e, edge in enumerate(edge_names(len(alphas))):
            for op, value in zip(PRIMITIVES, alphas[e], strict=True):
                yield cell, edge, op, float(value)
            if betas is not None:
                yield cell, edge, EDGE_WEIGHT, float(betas[e])


def trajectory_rows(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One history row in long form, one dict ``{"epoch", "panel", "series", "value"}`` per
    value: a panel per edge (``normal node2_in3``) holding its 8 softmaxed alphas and its
    edge weight, and the ``hessian_eigenvalue`` panel when a finite one was measured."""
    epoch = row["epoch"]
    rows = [
        {"epoch": epoch, "panel": f"{cell} {edge}", "series": series, "value": value}
        for cell, edge, series, value in _edge_values(row)
    ]
    value = (row.get("hessian") or {}).get("eigenvalue")
    if value is not None:
        rows.append({"epoch": epoch, "panel": EIGENVALUE, "series": EIGENVALUE, "value": value})
    return rows


def trajectory_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The alphas and edge weights as metrics: ``alpha/<cell>/<edge>/<op>`` and
    ``edge_weight/<cell>/<edge>``."""
    return {
        f"{EDGE_WEIGHT}/{cell}/{edge}"
        if series == EDGE_WEIGHT
        else f"alpha/{cell}/{edge}/{series}": value
        for cell, edge, series, value in _edge_values(row)
    }


# -- the Hessian's dominant eigenvalue -------------------------------------------------------


@dataclass(frozen=True)
class Eigenvalue:
    """One evaluation of the dominant eigenvalue; ``value`` may be NaN or inf (recorded so)."""

    value: float  # the largest eigenvalue of the Hessian
    iterations: int  # Hessian-vector products taken (both power iterations)
    converged: bool  # the estimate moved by less than the tolerance before the last step
    seconds: float  # wall time of the evaluation, forward and all products

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite value is written as null with ``status`` saying which."""
        status = "ok" if self.finite else ("nan" if math.isnan(self.value) else "inf")
        return {
            "eigenvalue": self.value if self.finite else None,
            "status": status,
            "iterations": self.iterations,
            "converged": self.converged,
            "seconds": self.seconds,
        }


Vector = list[Tensor]
Operator = Callable[[Vector], Vector]


def _dot(a: Vector, b: Vector) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()


def _scaled(v: Vector, scale: Tensor) -> Vector:
    return [x * scale for x in v]


def power_iteration(
    operator: Operator,
    start: Vector,
    iterations: int,
    tolerance: float,
) -> tuple[float, int, bool]:
    """The eigenvalue of largest magnitude of a symmetric ``operator`` (Rayleigh quotients).

    Returns (eigenvalue, products taken, converged). Stops when two successive estimates
    differ by at most ``tolerance`` times the latter, or a product is not finite (NaN).
    """
    v = _scaled(start, 1 / _dot(start, start).sqrt())
    estimate = math.nan
    for step in range(1, iterations + 1):
        hv = operator(v)
        value = float(_dot(v, hv))
        norm = _dot(hv, hv).sqrt()
        if not (math.isfinite(value) and math.isfinite(float(norm))):
            return value if not math.isfinite(value) else float(norm), step, False
        if float(norm) == 0.0:
            return 0.0, step, True
        converged = math.isfinite(estimate) and abs(value - estimate) <= tolerance * abs(value)
        estimate = value
        if converged:
            return estimate, step, True
        v = _scaled(hv, 1 / norm)
    return estimate, iterations, False


def largest_eigenvalue(
    operator: Operator, start: Vector, iterations: int, tolerance: float
) -> tuple[float, int, bool]:
    """The largest (algebraic) eigenvalue of a symmetric ``operator``, as Zela et al. take it
    (the maximum of the Hessian's eigenvalues).

    Power iteration finds the eigenvalue of largest magnitude, lambda. When lambda < 0 the
    largest one is found by a second power iteration on ``operator - lambda I`` (every
    eigenvalue shifted to >= 0, the largest the dominant), plus lambda.
    """
    value, steps, converged = power_iteration(operator, start, iterations, tolerance)
    if not math.isfinite(value) or value >= 0:
        return value, steps, converged
    shift = value

    def shifted(v: Vector) -> Vector:
        return [hv - shift * x for hv, x in zip(operator(v), v, strict=True)]

    top, more, converged = power_iteration(shifted, start, iterations, tolerance)
    return top + shift, steps + more, converged


def hessian_operator(loss: Tensor, params: Sequence[Tensor]) -> Operator:
    """v -> H v for the Hessian H of ``loss`` with respect to ``params`` (double backprop).

    One backward with ``create_graph`` here; each product is one backward through that
    graph, which is kept (``retain_graph``) for the next.
    """
    grads = torch.autograd.grad(loss, list(params), create_graph=True)

    def product(v: Vector) -> Vector:
        hv = torch.autograd.grad(_dot(list(grads), v), list(params), retain_graph=True)
        return [h.detach() for h in hv]

    return product


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Put back, on exit, every buffer of ``model`` (BatchNorm running statistics and
    counters) and every module's train/eval mode."""
    buffers = [b.detach().clone() for b in model.buffers()]
    modes = [m.training for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Leave torch's CPU and CUDA, NumPy's and Python's global random states as found."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def held_out_batch(
    dataset: Dataset[Any], indices: Sequence[int], size: int, seed: int
) -> tuple[Tensor, Tensor]:
    """A fixed batch of ``size`` items of ``dataset[indices]`` (images (N, C, H, W), labels (N,)).

    The items are drawn by a ``torch.Generator`` seeded with ``seed``; the dataset's random
    augmentation runs under the same seed with every global random state put back after,
    so the batch is the same for the same seed and no loader's sequence moves.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(indices), generator=generator)[: min(size, len(indices))]
    with isolated_rng():
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        x, y = default_collate([dataset[int(indices[int(i)])] for i in order])
    return x, y


def dominant_eigenvalue(
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    iterations: int,
    tolerance: float,
    seed: int,
) -> Eigenvalue:
    """The largest eigenvalue of the Hessian of ``loss_fn()`` with respect to ``params``.

    ``loss_fn`` runs the forward (the caller picks the batch and the loss); it runs with
    ``model`` in training mode, as the architecture step's loss does (BatchNorm on batch
    statistics), and every buffer and mode of ``model`` is put back after. The start vector
    is drawn from a ``torch.Generator`` seeded with ``seed``. Gradients go through
    ``torch.autograd.grad`` only: no ``.grad`` of any parameter is written.
    """
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    start = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    with preserved(model):
        model.train()
        operator = hessian_operator(loss_fn(), params)
        value, steps, converged = largest_eigenvalue(operator, start, iterations, tolerance)
    return Eigenvalue(value, steps, converged, time.perf_counter() - started)
