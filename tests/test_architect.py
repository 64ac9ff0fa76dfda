"""The architect (method §5): what one arch step changes, the second-order gradient, clipping."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdarts import Architect, ArchitectConfig, Supernet, create_model

BATCH, SIZE, CLASSES = 2, 8, 10
ETA, MOMENTUM, WD = 0.1, 0.9, 3e-4  # weight SGD of the unrolled step


def tiny_supernet(edge_norm: bool = True) -> Supernet:
    return create_model(
        "pcdarts_supernet_cifar10", C=8, layers=3, num_classes=CLASSES, k=2, edge_norm=edge_norm
    )


def batch(seed: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=dtype)
    return x, torch.randint(0, CLASSES, (BATCH,), generator=g)


def weight_sgd(model: Supernet) -> torch.optim.SGD:
    return torch.optim.SGD(model.weight_parameters(), lr=ETA, momentum=MOMENTUM, weight_decay=WD)


def weight_step(model: Supernet, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    """One SGD step on the weights; the arch parameters do not require grad meanwhile."""
    arch = model.arch_parameters()
    for p in arch:
        p.requires_grad_(False)
    try:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    finally:
        for p in arch:
            p.requires_grad_(True)


def capture_arch_grads(architect: Architect) -> list[list[Tensor]]:
    """The arch gradients as the Adam step sees them (after clipping), one list per step."""
    captured: list[list[Tensor]] = []

    def hook(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        grads = [p.grad for p in architect.model.arch_parameters()]
        assert all(g is not None for g in grads)
        captured.append([g.detach().clone() for g in grads if g is not None])

    architect.optimizer.register_step_pre_hook(hook)
    return captured


def snapshot(model: Supernet) -> dict[str, list[Tensor]]:
    return {
        "arch": [p.detach().clone() for p in model.arch_parameters()],
        "weights": [p.detach().clone() for p in model.weight_parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
    }


def assert_all_equal(a: list[Tensor], b: list[Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"tensor {i} changed"


def test_first_order_step_changes_only_arch_parameters() -> None:
    model = tiny_supernet().eval()  # eval: BN running statistics are not updated by forwards
    architect = Architect(model, F.cross_entropy, ArchitectConfig())
    before = snapshot(model)
    loss = architect.step(*batch(1))
    after = snapshot(model)
    assert loss.ndim == 0 and not loss.requires_grad
    assert len(after["arch"]) == 4
    for old, new in zip(before["arch"], after["arch"], strict=True):
        assert (old != new).all()
    assert_all_equal(before["weights"], after["weights"])
    assert_all_equal(before["buffers"], after["buffers"])
    assert all(p.grad is None for p in model.parameters())


def test_first_order_step_in_train_mode() -> None:
    """Weights stay; BN statistics move exactly as one forward on the arch batch moves them
    (the reference's arch step is a plain forward/backward of the model too)."""
    model = tiny_supernet().train()
    twin = copy.deepcopy(model)
    x, y = batch(1)
    architect = Architect(model, F.cross_entropy, ArchitectConfig())
    grads = capture_arch_grads(architect)
    before = snapshot(model)
    architect.step(x, y)
    loss = F.cross_entropy(twin(x), y)
    expected = torch.autograd.grad(loss, twin.arch_parameters())
    assert_all_equal(grads[0], list(expected))
    assert_all_equal(before["weights"], snapshot(model)["weights"])
    assert_all_equal(snapshot(twin)["buffers"], snapshot(model)["buffers"])
    assert not torch.equal(before["buffers"][0], snapshot(model)["buffers"][0])


def test_second_order_step_restores_weights_and_buffers() -> None:
    model = tiny_supernet().eval()
    optimizer = weight_sgd(model)
    weight_step(model, optimizer, *batch(2))  # populate the momentum buffers
    architect = Architect(model, F.cross_entropy, ArchitectConfig(second_order=True))
    before = snapshot(model)
    architect.step(*batch(1), *batch(2), eta=ETA, weight_optimizer=optimizer)
    after = snapshot(model)
    for old, new in zip(before["arch"], after["arch"], strict=True):
        assert (old != new).all()
    # The finite-difference HVP shifts the weights by +r v, -2r v, +r v, as the reference
    # does, so they come back up to float rounding, not bit for bit.
    for old, new in zip(before["weights"], after["weights"], strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    assert_all_equal(before["buffers"], after["buffers"])


def test_second_order_needs_weight_batch_and_optimizer() -> None:
    model = tiny_supernet()
    architect = Architect(model, F.cross_entropy, ArchitectConfig(second_order=True))
    with pytest.raises(ValueError, match="weight optimizer"):
        architect.step(*batch(1))


def test_weight_step_moves_weights_not_arch() -> None:
    model = tiny_supernet().train()
    optimizer = weight_sgd(model)
    before = snapshot(model)
    weight_step(model, optimizer, *batch(2))
    after = snapshot(model)
    assert_all_equal(before["arch"], after["arch"])
    assert all(p.grad is None for p in model.arch_parameters())
    assert all(p.requires_grad for p in model.arch_parameters())
    for i, (old, new) in enumerate(zip(before["weights"], after["weights"], strict=True)):
        assert not torch.equal(old, new), f"weight {i} did not move"


def reference_unrolled_grads(
    model: Supernet,
    optimizer: torch.optim.Optimizer,
    x_arch: Tensor,
    y_arch: Tensor,
    x_train: Tensor,
    y_train: Tensor,
    r: float = 0.01,
) -> list[Tensor]:
    """The DARTS reference architect, written out: a deep-copied unrolled model at
    w' = w - eta * (momentum * buf + dL_train/dw + wd * w), then
    dalpha = dL_val(w', alpha)/dalpha - eta * finite-difference HVP at w."""
    weights = list(model.weight_parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x_train), y_train), weights)
    unrolled = copy.deepcopy(model)
    with torch.no_grad():
        for w_new, w, g in zip(unrolled.weight_parameters(), weights, grads, strict=True):
            buf = optimizer.state[w]["momentum_buffer"]
            w_new.copy_(w - ETA * (MOMENTUM * buf + g + WD * w))
    u_arch, u_weights = unrolled.arch_parameters(), list(unrolled.weight_parameters())
    loss = F.cross_entropy(unrolled(x_arch), y_arch)
    all_grads = torch.autograd.grad(loss, u_arch + u_weights)
    dalpha, vector = all_grads[: len(u_arch)], all_grads[len(u_arch) :]

    radius = r / torch.cat([v.flatten() for v in vector]).norm()
    arch = model.arch_parameters()

    def shifted_arch_grads(scale: float) -> tuple[Tensor, ...]:
        with torch.no_grad():
            for w, v in zip(weights, vector, strict=True):
                w.add_(scale * radius * v)
        return torch.autograd.grad(F.cross_entropy(model(x_train), y_train), arch)

    grads_p = shifted_arch_grads(1.0)
    grads_n = shifted_arch_grads(-2.0)
    with torch.no_grad():
        for w, v in zip(weights, vector, strict=True):
            w.add_(radius * v)
    return [
        da - ETA * (gp - gn) / (2 * radius)
        for da, gp, gn in zip(dalpha, grads_p, grads_n, strict=True)
    ]


def test_second_order_matches_reference_reimplementation() -> None:
    dtype = torch.float64  # both sides take the same finite difference; compare it exactly
    model = tiny_supernet().to(dtype).train()
    optimizer = weight_sgd(model)
    weight_step(model, optimizer, *batch(2, dtype))  # momentum buffers must be used
    twin = copy.deepcopy(model)
    twin_optimizer = weight_sgd(twin)
    twin_optimizer.load_state_dict(optimizer.state_dict())

    architect = Architect(model, F.cross_entropy, ArchitectConfig(second_order=True))
    grads = capture_arch_grads(architect)
    x_arch, y_arch = batch(1, dtype)
    x_train, y_train = batch(3, dtype)
    architect.step(x_arch, y_arch, x_train, y_train, eta=ETA, weight_optimizer=optimizer)
    expected = reference_unrolled_grads(twin, twin_optimizer, x_arch, y_arch, x_train, y_train)

    plain = copy.deepcopy(twin)
    first_order = torch.autograd.grad(
        F.cross_entropy(plain(x_arch), y_arch), plain.arch_parameters()
    )
    for got, want, fo in zip(grads[0], expected, first_order, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
        assert not torch.allclose(got, fo, rtol=1e-3, atol=0)  # the unrolled term matters
    # Same weights and BN statistics afterwards as the reference procedure leaves.
    for w, w_ref in zip(model.weight_parameters(), twin.weight_parameters(), strict=True):
        torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-12)
    for buf, buf_ref in zip(model.buffers(), twin.buffers(), strict=True):
        torch.testing.assert_close(buf, buf_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("second_order", [False, True])
def test_arch_grad_clip_bounds_norm(second_order: bool) -> None:
    clip = 1e-4
    norms = {}
    for grad_clip in (None, clip):
        torch.manual_seed(0)
        model = tiny_supernet().train()
        optimizer = weight_sgd(model)
        config = ArchitectConfig(grad_clip=grad_clip, second_order=second_order)
        architect = Architect(model, F.cross_entropy, config)
        grads = capture_arch_grads(architect)
        architect.step(*batch(1), *batch(2), eta=ETA, weight_optimizer=optimizer)
        norms[grad_clip] = torch.cat([g.flatten() for g in grads[0]]).norm().item()
    assert norms[None] > 10 * clip  # clipping had something to do
    assert norms[clip] <= clip * (1 + 1e-5)


def test_edge_norm_off_has_no_betas() -> None:
    model = tiny_supernet(edge_norm=False).train()
    arch = model.arch_parameters()
    assert len(arch) == 2
    assert [p.shape for p in arch] == [torch.Size([14, 8])] * 2
    assert not any("betas" in name for name in model.state_dict())
    architect = Architect(model, F.cross_entropy, ArchitectConfig())
    before = [p.detach().clone() for p in arch]
    architect.step(*batch(1))
    assert all((old != new).all() for old, new in zip(before, arch, strict=True))


def test_architect_optimizer_is_adam_over_arch_parameters() -> None:
    model = tiny_supernet()
    architect = Architect(model, F.cross_entropy, ArchitectConfig())
    assert isinstance(architect.optimizer, torch.optim.Adam)
    (group,) = architect.optimizer.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in model.arch_parameters()]
    assert group["betas"] == (0.5, 0.999)
    assert group["lr"] == 6e-4 and group["weight_decay"] == 1e-3
    assert isinstance(model, nn.Module)
