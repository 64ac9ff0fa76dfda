"""The supernet (method §1-3) and the final networks (method §6) at tiny sizes on the CPU."""

from __future__ import annotations

import pytest
import torch

from pcdarts import GENOTYPES, Genotype, Network, create_model, get_genotype, list_models

CLASSES = 10
SUPERNET_INPUT = {"cifar10": 16, "imagenet": 64}  # ImageNet stem: /8 before the first cell


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_supernet_logits(dataset: str, k: int) -> None:
    net = create_model(f"pcdarts_supernet_{dataset}", C=8, layers=3, num_classes=CLASSES, k=k)
    size = SUPERNET_INPUT[dataset]
    logits = net(torch.randn(2, 3, size, size))
    assert logits.shape == (2, CLASSES)
    assert torch.isfinite(logits).all()
    assert isinstance(net.genotype(), Genotype)


@pytest.mark.parametrize("edge_norm", [True, False])
def test_arch_and_weight_parameters_partition_parameters(edge_norm: bool) -> None:
    net = create_model("pcdarts_supernet_cifar10", C=8, layers=3, k=2, edge_norm=edge_norm)
    arch = {id(p) for p in net.arch_parameters()}
    weights = [id(p) for p in net.weight_parameters()]
    assert len(arch) == (4 if edge_norm else 2)
    assert len(set(weights)) == len(weights)
    assert not arch & set(weights)
    assert arch | set(weights) == {id(p) for p in net.parameters()}
    named = dict(net.named_weight_parameters())
    assert [id(p) for p in named.values()] == weights


def test_arch_parameters_are_in_state_dict() -> None:
    net = create_model("pcdarts_supernet_cifar10", C=8, layers=3, k=2)
    state = net.state_dict()
    for name, shape in [
        ("alphas_normal", (14, 8)),
        ("alphas_reduce", (14, 8)),
        ("betas_normal", (14,)),
        ("betas_reduce", (14,)),
    ]:
        assert state[name].shape == shape
    fresh = create_model("pcdarts_supernet_cifar10", C=8, layers=3, k=2)
    fresh.load_state_dict(state)
    for a, b in zip(fresh.arch_parameters(), net.arch_parameters(), strict=True):
        assert torch.equal(a, b)


def test_k_must_divide_channels() -> None:
    with pytest.raises(ValueError, match="K=3"):
        create_model("pcdarts_supernet_cifar10", C=8, layers=3, k=3)


def test_unknown_dataset_raises() -> None:
    with pytest.raises(ValueError, match="cifar10"):
        create_model("pcdarts_supernet_mnist", C=8, layers=3)
    with pytest.raises(ValueError, match="cifar, imagenet"):
        create_model("pcdarts_supernet_cifar10", stem="mnist", C=8, layers=3)


@pytest.mark.parametrize("name", sorted(GENOTYPES))
@pytest.mark.parametrize(("dataset", "size"), [("cifar10", 32), ("cifar10", 16), ("imagenet", 64)])
def test_network_outputs(name: str, dataset: str, size: int) -> None:
    net = create_model(
        f"pcdarts_{dataset}", genotype=get_genotype(name), C=8, layers=5, num_classes=CLASSES
    )
    x = torch.randn(2, 3, size, size)
    net.train()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == (2, CLASSES)
    assert aux is not None and aux.shape == (2, CLASSES)
    net.eval()
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == (2, CLASSES)
    assert aux is None
    assert torch.equal(net(x), logits)  # forward: the logits alone, as every model's


def test_network_without_auxiliary_head() -> None:
    net = create_model(
        "pcdarts_cifar10", genotype=get_genotype("pc_darts_cifar"), C=8, layers=5, auxiliary=False
    ).train()
    assert net.auxiliary_head is None
    assert net.forward_with_aux(torch.randn(2, 3, 16, 16)).aux_logits is None


def tiny_network(name: str = "pc_darts_cifar") -> Network:
    return create_model(
        "pcdarts_cifar10", genotype=get_genotype(name), C=8, layers=5, num_classes=CLASSES
    )


def test_drop_path_prob_is_in_state_dict() -> None:
    net = tiny_network()
    net.drop_path_prob = 0.25
    fresh = tiny_network()
    assert fresh.drop_path_prob == 0.0
    fresh.load_state_dict(net.state_dict())
    assert fresh.drop_path_prob == 0.25


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("other", ["pc_darts_imagenet", "darts_v2"])
def test_state_dict_of_other_genotype_raises(other: str, strict: bool) -> None:
    state = tiny_network("pc_darts_cifar").state_dict()
    # The genotype kept in the state dict refuses the load, even where shapes coincide.
    with pytest.raises(ValueError, match="genotype"):
        tiny_network(other).load_state_dict(state, strict=strict)


def test_drop_path_only_in_training() -> None:
    net = tiny_network()
    x = torch.randn(4, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        clean = net(x)
        net.drop_path_prob = 0.5
        torch.manual_seed(1)
        assert torch.equal(net(x), clean)
        net.train()  # train mode: BN uses batch statistics, so only drop path is random
        torch.manual_seed(1)
        first = net(x)
        torch.manual_seed(2)
        second = net(x)
        torch.manual_seed(1)
        assert torch.equal(net(x), first)
        assert not torch.equal(first, second)
        net.drop_path_prob = 0.0
        torch.manual_seed(2)
        assert torch.equal(net(x), net(x))


def test_features_one_map_per_cell() -> None:
    layers, channels = 5, 8
    net = create_model(
        "pcdarts_cifar10", genotype=get_genotype("pc_darts_imagenet"), C=channels, layers=layers
    )
    net.eval()
    with torch.no_grad():
        maps = net.features(torch.randn(2, 3, 16, 16))
    assert len(maps) == layers == len(net.cells)
    # reductions at cells 1 and 3 (1/3 and 2/3 of the depth): width and channels double
    expected = [(4 * 8, 16), (4 * 16, 8), (4 * 16, 8), (4 * 32, 4), (4 * 32, 4)]
    assert [(m.shape[1], m.shape[2]) for m in maps] == expected
    assert all(m.shape[0] == 2 and m.shape[2] == m.shape[3] for m in maps)
    with torch.no_grad():
        logits = net(torch.zeros(1, 3, 16, 16))
        first = net.features(torch.zeros(1, 3, 16, 16), stop=2)  # the same path, cut short
        every = net.features(torch.zeros(1, 3, 16, 16))
    assert all(torch.equal(a, b) for a, b in zip(first, every[:2], strict=True))
    assert logits.shape == (1, 10)


@pytest.mark.parametrize("layers", [3, 5, 8, 14, 20])
def test_one_rule_places_the_reduction_cells(layers: int) -> None:
    """The supernet, the final network and the params rules reduce at the same cells."""
    from pcdarts.space import reduction_cells
    from pipeline.param_rules import cell_channels

    at = reduction_cells(layers)
    assert at == (layers // 3, 2 * layers // 3)  # 1/3 and 2/3 of the depth (method §1)
    supernet = create_model("pcdarts_supernet_cifar10", C=8, layers=layers, k=1)
    network = create_model("pcdarts_cifar10", C=8, layers=layers)
    for net in (supernet, network):
        assert [i for i, c in enumerate(net.cells) if c.reduction] == list(at)
    channels = cell_channels(8, layers)
    assert [i for i in range(1, layers) if channels[i] > channels[i - 1]] == list(at)


def test_drop_path_ramp_is_set_through_one_call() -> None:
    from pcdarts.schedule import drop_path_prob

    net = tiny_network()
    ramp = [drop_path_prob(0.3, epoch, 600) for epoch in (0, 300, 599)]
    assert ramp == [0.0, 0.3 * 300 / 600, 0.3 * 599 / 600]  # the reference's expression
    net.set_drop_path_prob(ramp[1])
    assert net.drop_path_prob == 0.15
    with pytest.raises(ValueError, match="drop-path"):
        net.set_drop_path_prob(1.0)


@pytest.mark.parametrize("name", list_models())
def test_create_model_builds_every_registered_model_at_its_paper_size(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name).eval()
    size = 32 if "cifar10" in name else 64  # ImageNet stem: /8 before the first cell
    with torch.no_grad():
        logits = net(torch.randn(1, 3, size, size))
    classes = 10 if "cifar10" in name else 1000
    assert logits.shape == (1, classes)
    assert torch.isfinite(logits).all()


def test_create_model_overrides_fields_and_refuses_unknown_ones() -> None:
    net = create_model("pcdarts_imagenet", C=8, layers=5, num_classes=3, auxiliary=False)
    assert isinstance(net, Network)
    assert net.classifier.out_features == 3 and net.auxiliary_head is None
    assert create_model("pcdarts_supernet_imagenet", C=8, layers=3).cells[0]._ops[0].k == 2
    with pytest.raises(TypeError, match="channels"):
        create_model("pcdarts_cifar10", channels=8)


@pytest.mark.parametrize(("name", "size"), [("pcdarts_cifar10", 16), ("pcdarts_imagenet", 64)])
def test_feature_info_agrees_with_the_feature_maps(name: str, size: int) -> None:
    net = create_model(name, C=8, layers=6, num_classes=CLASSES).eval()
    with torch.no_grad():
        maps = net.features(torch.randn(2, 3, size, size))
    assert len(net.feature_info) == len(maps) == len(net.cells)
    modules = dict(net.named_modules())
    for info, m in zip(net.feature_info, maps, strict=True):
        assert info["num_chs"] == m.shape[1]
        assert info["reduction"] == size // m.shape[2] == size // m.shape[3]
        assert modules[info["module"]] is net.cells[int(info["module"].split(".")[1])]
