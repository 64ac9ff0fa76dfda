"""Search diagnostics (issue 25): op counts, changed pairs, trajectories, and the Hessian's
dominant eigenvalue, against the exact Hessian and as a pure observer of the search."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import ArchitectConfig, create_model, get_genotype
from pcdarts.config import DiagnosticsConfig
from pcdarts.diagnostics import (
    changed_pairs,
    dominant_eigenvalue,
    edge_names,
    held_out_batch,
    largest_eigenvalue,
    op_counts,
    trajectory_metrics,
    trajectory_rows,
)
from pcdarts.genotypes import Genotype
from pcdarts.search import SearchConfig, Searcher
from pcdarts.supernet import Supernet, SupernetConfig

CPU = torch.device("cpu")
TINY_SEARCH = SearchConfig(epochs=3, warmup_epochs=1, lr=0.05, architect=ArchitectConfig(lr=3e-3))
# Every epoch, few products: the test is about what the evaluation touches, not its value
HESSIAN_ON = DiagnosticsConfig(
    hessian=True, hessian_every=1, hessian_batch_size=4, hessian_iterations=3
)
# The power iteration against the exact Hessian's largest eigenvalue, in float64
EIGEN_RTOL = 1e-6


def _loader(n: int, seed: int, size: int = 8, classes: int = 4, batch: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def _genotype(normal: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> Genotype:
    return Genotype(tuple(normal), (2, 3, 4, 5), tuple(reduce), (2, 3, 4, 5))


def test_op_counts_of_published_cells() -> None:
    darts = op_counts(get_genotype("darts_v2"))
    # DARTS_V2: normal has 2 skips; reduction 3 skips and 5 max pools
    assert darts == {
        "skip_connections_normal": 2,
        "param_free_normal": 2,
        "skip_connections_reduce": 3,
        "param_free_reduce": 8,
    }
    pc = op_counts(get_genotype("pc_darts_cifar"))
    assert pc["skip_connections_normal"] == 1 and pc["param_free_normal"] == 2  # skip, avg pool
    assert pc["skip_connections_reduce"] == 0 and pc["param_free_reduce"] == 1  # max pool


def test_changed_pairs_node_by_node() -> None:
    cell = [("sep_conv_3x3", 0), ("skip_connect", 1)] * 4
    base = _genotype(cell, cell)
    assert changed_pairs(None, base) == {"changed_pairs_normal": 0, "changed_pairs_reduce": 0}
    assert changed_pairs(base, base) == {"changed_pairs_normal": 0, "changed_pairs_reduce": 0}
    swapped = [("skip_connect", 1), ("sep_conv_3x3", 0)] + cell[2:]  # same node, other order
    assert changed_pairs(base, _genotype(swapped, cell))["changed_pairs_normal"] == 0
    one_op = [("dil_conv_3x3", 0)] + cell[1:]  # another op on the same edge
    other_input = cell[:2] + [("sep_conv_3x3", 2)] + cell[3:]  # the same op from another state
    both = [("max_pool_3x3", 1), ("max_pool_3x3", 0)] + cell[2:]
    changed = changed_pairs(base, _genotype(one_op, both))
    assert changed == {"changed_pairs_normal": 1, "changed_pairs_reduce": 2}
    assert changed_pairs(base, _genotype(other_input, cell))["changed_pairs_normal"] == 1


def test_trajectories_hold_every_edge_op_and_edge_weight() -> None:
    assert edge_names(14)[:5] == ["node0_in0", "node0_in1", "node1_in0", "node1_in1", "node1_in2"]
    alphas = torch.softmax(torch.randn(14, 8), -1).tolist()
    row = {"epoch": 3, "alphas_normal": alphas, "alphas_reduce": alphas, "betas_normal": [0.5] * 14}
    rows = trajectory_rows(row)
    assert len(rows) == 2 * 14 * 8 + 14  # no reduce betas: edge normalisation off there
    assert rows[-1] == {
        "epoch": 3,
        "panel": "reduce node3_in4",
        "series": "dil_conv_5x5",
        "value": pytest.approx(alphas[13][7]),
    }
    measured = trajectory_rows({**row, "hessian": {"eigenvalue": 2.5, "status": "ok"}})
    assert measured[-1] == {
        "epoch": 3,
        "panel": "hessian_eigenvalue",
        "series": "hessian_eigenvalue",
        "value": 2.5,
    }
    nan = {**row, "hessian": {"eigenvalue": None, "status": "nan"}}
    assert len(trajectory_rows(nan)) == len(rows)  # a NaN is in the history, not plotted
    metrics = trajectory_metrics(row)
    assert metrics["alpha/normal/node3_in4/dil_conv_5x5"] == pytest.approx(alphas[13][7])
    assert metrics["edge_weight/normal/node0_in1"] == 0.5
    assert "edge_weight/reduce/node0_in1" not in metrics


def _tiny_supernet(steps: int, fused: bool = True) -> Supernet:
    torch.manual_seed(0)
    config = SupernetConfig(C=4, layers=3, num_classes=4, k=2, steps=steps, fused=fused)
    model = Supernet(config).double()
    with torch.no_grad():  # away from the uniform start, where the Hessian is degenerate
        for p in model.arch_parameters():
            p.normal_(0, 0.5)
    return model


def _exact_hessian(model: Supernet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Hessian of the loss w.r.t. the flattened arch parameters, by
    torch.autograd.functional.hessian (double backprop, one row per parameter)."""
    names = [n for n, _ in model.named_parameters() if "alphas" in n or "betas" in n]
    params = [model.get_parameter(n) for n in names]
    sizes = [p.numel() for p in params]
    criterion = torch.nn.CrossEntropyLoss()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = [t.view(p.shape) for t, p in zip(flat.split(sizes), params, strict=True)]
        return criterion(functional_call(model, dict(zip(names, parts, strict=True)), (x,)), y)

    model.train()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    hessian = torch.autograd.functional.hessian(loss, flat)
    assert isinstance(hessian, torch.Tensor)
    return hessian


@pytest.mark.parametrize("steps", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_eigenvalue_is_the_exact_hessians_largest(steps: int) -> None:
    """Power iteration on the fused supernet against the exact Hessian of the edge-by-edge
    oracle (same weights): the largest eigenvalue to EIGEN_RTOL, float64. steps=1 (36 arch
    parameters) is fast; steps=4 (the DARTS cell, 252) takes about a minute."""
    oracle = _tiny_supernet(steps, fused=False)
    model = _tiny_supernet(steps, fused=True)
    model.load_state_dict(oracle.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (4,), generator=g)
    hessian = _exact_hessian(oracle, x, y)
    assert torch.allclose(hessian, hessian.T, atol=1e-12)
    exact = float(torch.linalg.eigvalsh(hessian).max())
    criterion = torch.nn.CrossEntropyLoss()
    found = dominant_eigenvalue(
        model,
        lambda: criterion(model(x), y),
        model.arch_parameters(),
        iterations=500,
        tolerance=1e-12,
        seed=0,
    )
    assert found.converged and found.finite
    assert found.value == pytest.approx(exact, rel=EIGEN_RTOL)


def test_largest_eigenvalue_when_a_negative_one_dominates() -> None:
    matrix = torch.diag(torch.tensor([-5.0, 2.0, 1.0], dtype=torch.float64))
    start = [torch.ones(3, dtype=torch.float64)]
    value, steps, converged = largest_eigenvalue(
        lambda v: [matrix @ v[0]], start, iterations=500, tolerance=1e-12
    )
    assert converged and value == pytest.approx(2.0, rel=1e-9) and steps > 1


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_products_give_a_non_finite_eigenvalue(bad: float) -> None:
    value, steps, converged = largest_eigenvalue(
        lambda v: [v[0] * bad], [torch.ones(3)], iterations=10, tolerance=1e-3
    )
    assert not math.isfinite(value) and steps == 1 and not converged


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_eigenvalue_touches_no_model_rng_or_grad_state() -> None:
    model = create_model("pcdarts_supernet_cifar10", C=4, layers=3, num_classes=4, k=2)
    model.eval()
    before = _state(model)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())  # noqa: NPY002
    criterion = torch.nn.CrossEntropyLoss()
    found = dominant_eigenvalue(
        model,
        lambda: criterion(model(x), y),
        model.arch_parameters(),
        iterations=3,
        tolerance=1e-3,
        seed=0,
    )
    assert found.iterations == 3 and found.finite
    after = _state(model)
    for key, value in before.items():  # BN running statistics and counters included
        assert torch.equal(value, after[key]), key
    assert not any(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng[0], torch.get_rng_state())
    assert rng[1] == random.getstate()
    assert np.array_equal(rng[2], np.random.get_state()[1])  # noqa: NPY002


def test_held_out_batch_is_fixed_by_the_seed_and_moves_no_global_rng() -> None:
    dataset = TensorDataset(torch.arange(20.0).view(20, 1), torch.arange(20))
    state = torch.get_rng_state()
    x1, y1 = held_out_batch(dataset, list(range(10, 20)), 4, seed=3)
    x2, y2 = held_out_batch(dataset, list(range(10, 20)), 4, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(y1, y2) and y1.shape == (4,) and all(10 <= int(v) < 20 for v in y1)
    assert not torch.equal(y1, held_out_batch(dataset, list(range(10, 20)), 4, seed=4)[1])
    assert held_out_batch(dataset, [1, 2], 4, seed=0)[1].shape == (2,)  # no more than there is


def _search(config: SearchConfig, seed: int = 123) -> tuple[Searcher, Any]:
    torch.manual_seed(seed)
    model = create_model("pcdarts_supernet_cifar10", C=4, layers=3, num_classes=4, k=2)
    searcher = Searcher(model, config, CPU, show_progress=False, seed=0)
    # shuffle=True loaders draw their order from the global torch RNG: any draw by the
    # diagnostics would change the batches and the trajectory
    return searcher, searcher.run(_loader(8, 1), _loader(8, 2))


def _without_hessian(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row in history:
        kept = {k: v for k, v in row.items() if k != "hessian"}
        kept["metrics"] = {k: v for k, v in row["metrics"].items() if "hessian" not in k}
        rows.append(kept)
    return rows


@pytest.fixture(scope="module")
def search_off() -> tuple[Searcher, Any]:
    return _search(TINY_SEARCH)


def test_eigenvalue_on_follows_the_same_trajectory_as_off(search_off: Any) -> None:
    off_searcher, off = search_off
    on_searcher, on = _search(replace(TINY_SEARCH, diagnostics=HESSIAN_ON))
    assert all("hessian" not in row for row in off.history)
    assert [row["hessian"]["status"] for row in on.history] == ["ok"] * 3
    assert all("search/hessian_eigenvalue" in row["metrics"] for row in on.history)
    assert _without_hessian(on.history) == _without_hessian(off.history)
    on_state, off_state = on_searcher.state_dict(), off_searcher.state_dict()
    for key, value in off_state["model"].items():  # weights, alphas, betas, BN statistics
        assert torch.equal(value, on_state["model"][key]), key
    for name in ("optimizer", "arch_optimizer"):
        a, b = off_state[name]["state"], on_state[name]["state"]
        assert a.keys() == b.keys()
        for index in a:
            for key, value in a[index].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[index][key]))
    assert torch.equal(off_state["rng"]["torch"], on_state["rng"]["torch"])
    assert on.genotype == off.genotype


def test_history_marks_the_warm_up_and_counts_the_cell(search_off: Any) -> None:
    _, result = search_off
    assert [row["arch_frozen"] for row in result.history] == [True, False, False]
    for row in result.history:
        assert row["metrics"]["search/arch_frozen"] == float(row["arch_frozen"])
        counts = op_counts(Genotype.from_dict(row["genotype"]))
        assert {k: row[k] for k in counts} == counts
        total = row["changed_pairs_normal"] + row["changed_pairs_reduce"]
        assert row["metrics"]["search/changed_pairs"] == total
        assert (total > 0) == row["genotype_changed"]
    assert result.history[0]["changed_pairs_normal"] == 0  # nothing before the first epoch
