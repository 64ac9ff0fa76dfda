"""Parameter and mult-add counts against the reference implementation's (method §7)."""

from __future__ import annotations

import pytest
import torch

from pcdarts import Network, count_macs, count_params, create_model, get_genotype

MAC_RTOL = 0.005  # mult-adds within 0.5% of the reference counter

# (genotype, params in M, mult-adds "paper", mult-adds "conv_linear"), ImageNet C=48, 14 cells
IMAGENET_CASES = [
    ("pc_darts_cifar", 5.270560, 585.95, 571.14),
    ("pc_darts_imagenet", 5.342464, 597.06, 581.63),
]


@pytest.fixture(scope="module")
def imagenet_nets() -> dict[str, Network]:
    torch.manual_seed(0)
    return {
        name: create_model(
            "pcdarts_imagenet", genotype=get_genotype(name), C=48, layers=14, num_classes=1000
        )
        for name, *_ in IMAGENET_CASES
    }


def test_cifar_params_exclude_auxiliary_head() -> None:
    net = create_model(
        "pcdarts_cifar10", genotype=get_genotype("pc_darts_cifar"), C=36, layers=20, num_classes=10
    )
    assert net.auxiliary_head is not None
    aux = sum(p.numel() for p in net.auxiliary_head.parameters())
    assert aux > 0
    assert count_params(net) == pytest.approx(3.634678, abs=1e-6)
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(3.634678 + aux / 1e6)


@pytest.mark.parametrize(("name", "params", "macs_paper", "macs_conv"), IMAGENET_CASES)
def test_imagenet_counts(
    imagenet_nets: dict[str, Network],
    name: str,
    params: float,
    macs_paper: float,
    macs_conv: float,
) -> None:
    net = imagenet_nets[name]
    assert net.auxiliary_head is not None
    assert count_params(net) == pytest.approx(params, abs=1e-6)
    assert count_macs(net, 224) == pytest.approx(macs_paper, rel=MAC_RTOL)
    assert count_macs(net, 224, convention="conv_linear") == pytest.approx(macs_conv, rel=MAC_RTOL)


@pytest.mark.parametrize("training", [True, False])
def test_count_macs_restores_mode(training: bool) -> None:
    net = create_model("pcdarts_cifar10", genotype=get_genotype("pc_darts_cifar"), C=8, layers=5)
    net.train(training)
    assert count_macs(net, 16) > 0
    assert net.training is training
    assert all(m.training is training for m in net.modules())


def test_count_macs_paper_adds_bn_and_relu() -> None:
    net = create_model("pcdarts_cifar10", genotype=get_genotype("darts_v2"), C=8, layers=5)
    assert count_macs(net, (16, 16)) > count_macs(net, 16, convention="conv_linear")


def test_count_macs_rejects_unknown_convention() -> None:
    net = create_model("pcdarts_cifar10", genotype=get_genotype("pc_darts_cifar"), C=8, layers=5)
    with pytest.raises(ValueError, match="flops"):
        count_macs(net, 16, convention="flops")
