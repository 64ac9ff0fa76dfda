"""Equality with the reference implementation (yuhuixu1993/PC-DARTS) on recorded cases.

Parameter names: our module tree mirrors the reference's (``_ops.<i>`` in PRIMITIVES
order, pools as ``Sequential(pool, BN)``, ``op.<n>`` sequences, ``preprocess0/1``,
``stem``, ``cells``, ``classifier``), so the mapping by structure is: pair state-dict
entries in registration order, after dropping our architecture parameters (the
reference keeps alphas/betas outside the module as plain Variables), and require that
each pair has the same shape. ``_map_by_structure`` does that and checks it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pcdarts import MixedOp, channel_shuffle, create_model, derive_genotype, edge_weights
from pcdarts.genotypes import Genotype
from pcdarts.ops import PRIMITIVES


def _map_by_structure(
    ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], skip: set[str]
) -> dict[str, torch.Tensor]:
    our_keys = [k for k in ours if k not in skip]
    assert len(our_keys) == len(ref), "module trees differ in size"
    mapped = {}
    for ours_key, (ref_key, value) in zip(our_keys, ref.items(), strict=True):
        assert ours[ours_key].shape == value.shape, f"{ours_key} vs {ref_key}"
        mapped[ours_key] = value
    return mapped


def test_primitives_order(reference: dict[str, Any]) -> None:
    assert list(PRIMITIVES) == reference["PRIMITIVES"]


def test_derive_genotype_equals_reference(reference: dict[str, Any]) -> None:
    cases = reference["genotype_cases"]
    assert len(cases) > 0
    for i, case in enumerate(cases):
        arch = case["arch"]
        got = derive_genotype(
            arch["alphas_normal"], arch["alphas_reduce"], arch["betas_normal"], arch["betas_reduce"]
        )
        assert got == Genotype.from_dict(case["genotype"]), f"case {i}"
        # numpy input gives the same answer
        numpy_arch = {k: v.numpy() for k, v in arch.items()}
        assert derive_genotype(**numpy_arch) == got


def test_edge_weights_equal_reference(reference: dict[str, Any]) -> None:
    for case in reference["weights2_cases"]:
        torch.testing.assert_close(edge_weights(case["betas"]), case["weights2"], rtol=0, atol=1e-7)


def test_channel_shuffle_equals_reference(reference: dict[str, Any]) -> None:
    for case in reference["channel_shuffle_cases"]:
        assert torch.equal(channel_shuffle(case["x"], case["groups"]), case["out"])


def test_mixed_op_equals_reference(reference: dict[str, Any]) -> None:
    cases = reference["mixed_op_cases"]
    seen = {(c["K"], c["stride"], c["train"]) for c in cases}
    assert seen == {(k, s, t) for k in (1, 2, 4) for s in (1, 2) for t in (True, False)}
    for case in cases:
        op = MixedOp(case["C"], case["stride"], case["K"])
        op.load_state_dict(_map_by_structure(op.state_dict(), case["state_dict"], set()))
        op.train(case["train"])
        with torch.no_grad():
            out = op(case["x"], case["weights"])
        label = f"K={case['K']} stride={case['stride']} train={case['train']}"
        torch.testing.assert_close(out, case["out"], rtol=0, atol=1e-6, msg=label)
        after = _map_by_structure(op.state_dict(), case["state_dict_after"], set())
        for key, value in after.items():  # BN running stats move (train) or stay (eval)
            torch.testing.assert_close(
                op.state_dict()[key], value, rtol=0, atol=1e-6, msg=f"{label} {key}"
            )


def test_supernet_equals_reference(reference: dict[str, Any]) -> None:
    (case,) = reference["supernet_cases"]
    net = create_model(
        "pcdarts_supernet_cifar10", C=case["C"], layers=case["layers"], num_classes=10, k=case["K"]
    )
    arch_names = {"alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"}
    net.load_state_dict(
        {**_map_by_structure(net.state_dict(), case["state_dict"], arch_names), **case["arch"]}
    )
    net.train(case["train"])
    with torch.no_grad():
        logits = net(case["x"])
    torch.testing.assert_close(logits, case["logits"], rtol=0, atol=1e-6)
    assert net.genotype() == Genotype.from_dict(case["genotype"])
    after = _map_by_structure(net.state_dict(), case["state_dict_after"], arch_names)
    for key, value in after.items():
        torch.testing.assert_close(net.state_dict()[key], value, rtol=1e-6, atol=1e-6, msg=key)


@pytest.mark.parametrize("stride", [1, 2])
def test_k1_is_darts(stride: int) -> None:
    """K=1: no bypass, no shuffle: the output is exactly the weighted sum of all ops."""
    op = MixedOp(8, stride, k=1).eval()
    x = torch.randn(2, 8, 8, 8)
    w = torch.softmax(torch.randn(8), dim=0)
    expected = sum(wi * o(x) for wi, o in zip(w, op._ops, strict=True))
    torch.testing.assert_close(op(x, w), expected)
