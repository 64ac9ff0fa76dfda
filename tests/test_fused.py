"""The fast cell forward (pcdarts.fused) against the straightforward oracle (one MixedOp per edge).

Same modules, same state dict, same inputs: outputs, the gradients of every parameter
(weights, alphas, betas) and of the input, and the BN running statistics agree within
float32 rounding. The bound: the largest difference is at most ``REL`` times the largest
magnitude of that quantity over the whole model (per-tensor relative errors are
meaningless for weights whose true gradient is 0, e.g. a 1x1 conv of one channel
followed by an affine-free BN, where both paths return rounding noise of ~1e-11).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import pcdarts.fused
from pcdarts import Architect, ArchitectConfig, Supernet, create_model
from pcdarts.fused import FusedSearchCell, input_groups
from pcdarts.supernet import SearchCell

REL = 1e-5  # measured: <= 3e-7 for outputs, <= 4e-5 for gradients at K=4 (see below)
GRAD_REL = 1e-4


def _max_rel(ours: list[Tensor], oracle: list[Tensor]) -> float:
    diff = max((a - b).abs().max().item() for a, b in zip(ours, oracle, strict=True))
    scale = max(b.abs().max().item() for b in oracle)
    return diff / scale if scale > 0 else diff


def _pair_cells(cell: SearchCell, *args: Any) -> tuple[nn.Module, nn.Module]:
    """(oracle, fast): a copy of ``cell`` (built from ``args``) and a FusedSearchCell with
    its state: the same modules, so they differ only in the forward they take."""
    oracle, fast = copy.deepcopy(cell), FusedSearchCell(*args)
    fast.load_state_dict(cell.state_dict())
    return oracle, fast.train(cell.training)


def _pair(name: str, **overrides: Any) -> tuple[Supernet, Supernet]:
    """(oracle, fast): the supernet ``name`` built edge by edge and fused, with one state."""
    oracle = create_model(name, fused=False, **overrides)
    fast = create_model(name, fused=True, **overrides)
    fast.load_state_dict(oracle.state_dict())
    assert all(isinstance(c, FusedSearchCell) for c in fast.cells)
    assert not any(isinstance(c, FusedSearchCell) for c in oracle.cells)
    return oracle, fast


def test_input_groups_cover_every_edge_once() -> None:
    groups = input_groups(steps=4)
    edges = sorted(e for g in groups for e in g.edges)
    assert edges == list(range(14))
    for g in groups:  # state i feeds exactly the nodes j with i < 2 + j (method §1)
        assert g.nodes == tuple(j for j in range(4) if g.state < 2 + j)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("reduction", [False, True], ids=["stride1", "stride2"])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_cell_equals_oracle(k: int, reduction: bool, train: bool) -> None:
    channels = 16  # c = 16 / K: even at every K, as the stride-2 FactorizedReduce needs
    args = (4, channels, channels, channels, reduction, False, k)
    cell = SearchCell(*args)
    cell.train(train)
    with torch.no_grad():  # BN statistics that differ per edge, so eval mode is tested too
        for m in cell.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    oracle, fast = _pair_cells(cell, *args)
    alphas = torch.randn(14, 8, requires_grad=True)
    betas = torch.randn(14, requires_grad=True)
    s0, s1 = torch.randn(4, channels, 8, 8), torch.randn(4, channels, 8, 8)
    outs, grads = [], []
    for net in (oracle, fast):
        x0, x1 = s0.clone().requires_grad_(), s1.clone().requires_grad_()
        out = net(x0, x1, torch.softmax(alphas, -1), torch.sigmoid(betas))
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append([x0.grad, x1.grad, alphas.grad.clone(), betas.grad.clone()])
        grads[-1] += [p.grad for p in net.parameters()]
        alphas.grad, betas.grad = None, None
    assert outs[1].shape == outs[0].shape
    assert _max_rel([outs[1]], [outs[0]]) <= REL
    assert _max_rel(grads[1], grads[0]) <= GRAD_REL
    buffers = [list(net.buffers()) for net in (oracle, fast)]
    assert _max_rel([b.float() for b in buffers[1]], [b.float() for b in buffers[0]]) <= REL


@pytest.mark.parametrize("edge_norm", [True, False], ids=["EN", "noEN"])
@pytest.mark.parametrize(("dataset", "k", "size"), [("cifar10", 4, 16), ("imagenet", 2, 32)])
def test_supernet_equals_oracle(dataset: str, k: int, size: int, edge_norm: bool) -> None:
    oracle, fast = _pair(
        f"pcdarts_supernet_{dataset}", C=8, layers=5, num_classes=10, k=k, edge_norm=edge_norm
    )
    x = torch.randn(4, 3, size, size)
    logits = []
    for model in (oracle, fast):
        out = model(x)
        out.square().sum().backward()
        logits.append(out.detach())
    assert _max_rel([logits[1]], [logits[0]]) <= REL
    assert (
        _max_rel([p.grad for p in fast.parameters()], [p.grad for p in oracle.parameters()])
        <= GRAD_REL
    )
    assert fast.genotype() == oracle.genotype()


@pytest.mark.parametrize("second_order", [False, True], ids=["first", "second"])
def test_arch_step_equals_oracle(second_order: bool) -> None:
    pair = _pair("pcdarts_supernet_cifar10", C=8, layers=3, num_classes=10, k=4)
    net = copy.deepcopy(pair[0])
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    xt, yt = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    after = []
    for model in pair:
        model.train()
        sgd = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
        config = ArchitectConfig(lr=0.1, second_order=second_order)  # a visible step
        architect = Architect(model, nn.functional.cross_entropy, config)  # type: ignore[arg-type]
        architect.step(x, y, xt, yt, 0.1, sgd)
        after.append([p.detach().clone() for p in model.arch_parameters()])  # type: ignore[operator]
    moved = [a - b for a, b in zip(after[0], net.arch_parameters(), strict=True)]
    assert max(m.abs().max().item() for m in moved) > 1e-3  # the step did move the arch
    diff = max((a - b).abs().max().item() for a, b in zip(after[1], after[0], strict=True))
    assert diff <= 1e-3 * max(m.abs().max().item() for m in moved)


def test_sync_batch_norm_takes_the_oracle_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SyncBatchNorm synchronises inside its own forward: the fused BN would bypass it.
    Converted after construction (as the distributed search converts its supernet), every
    cell takes SearchCell's forward, and gives its output."""
    net = create_model("pcdarts_supernet_cifar10", C=8, layers=3, num_classes=10, k=2)
    assert all(isinstance(c, FusedSearchCell) and c.grouped for c in net.cells)
    nn.SyncBatchNorm.convert_sync_batchnorm(net)  # in place: the BNs are children
    assert not any(c.grouped for c in net.cells)

    def grouped(*args: Any) -> None:
        raise AssertionError("the grouped forward ran on SyncBatchNorm")

    monkeypatch.setattr(pcdarts.fused, "_grouped_forward", grouped)
    x = torch.randn(2, 3, 8, 8)
    oracle = create_model(
        "pcdarts_supernet_cifar10", C=8, layers=3, num_classes=10, k=2, fused=False
    )
    oracle.load_state_dict(net.state_dict())
    for model in (net, oracle):
        model.eval()
    with torch.no_grad():
        assert torch.equal(net(x), oracle(x))  # the same forward, edge by edge
    cell = FusedSearchCell(4, 8, 8, 8, False, False, 2)  # a cell converted alone
    assert cell.grouped
    assert not nn.SyncBatchNorm.convert_sync_batchnorm(cell).grouped
