"""Genotypes (method §4): the registry, serialisation, validation and derivation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pcdarts import GENOTYPES, PRIMITIVES, Genotype, derive_genotype, edge_weights, get_genotype
from pcdarts.derivation import derivation_margin, stable_since
from pcdarts.errors import MissingInputError, UserError
from pcdarts.genotypes import GenotypeError, UnknownGenotypeError, load_genotype
from pcdarts.space import steps_for_edges

NONE = PRIMITIVES.index("none")
EDGES, OPS = 14, len(PRIMITIVES)


@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_dict_and_json_round_trip(name: str) -> None:
    genotype = get_genotype(name)
    assert Genotype.from_dict(genotype.to_dict()) == genotype
    text = json.dumps(genotype.to_dict())
    restored = Genotype.from_dict(json.loads(text))
    assert restored == genotype
    assert hash(restored) == hash(genotype)
    assert len(genotype.normal) == len(genotype.reduce) == 8
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)


def test_registry_holds_the_published_cells() -> None:
    assert set(GENOTYPES) == {"darts_v2", "pc_darts_cifar", "pc_darts_imagenet"}
    cifar = get_genotype("pc_darts_cifar")
    assert cifar.normal[:2] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    assert cifar.reduce[-2:] == (("sep_conv_3x3", 1), ("sep_conv_3x3", 2))
    image = get_genotype("pc_darts_imagenet")
    assert image.normal[-1] == ("dil_conv_5x5", 4)
    assert image.reduce[:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))


def _valid_dict() -> dict[str, Any]:
    return get_genotype("pc_darts_cifar").to_dict()


@pytest.mark.parametrize("key", ["normal", "normal_concat", "reduce", "reduce_concat"])
def test_from_dict_rejects_missing_keys(key: str) -> None:
    d = _valid_dict()
    del d[key]
    with pytest.raises(ValueError, match=key):
        Genotype.from_dict(d)


@pytest.mark.parametrize("op", ["conv_7x7", "none"])
def test_from_dict_rejects_unknown_ops(op: str) -> None:
    d = _valid_dict()
    d["reduce"][3] = [op, 1]
    with pytest.raises(ValueError, match=op):
        Genotype.from_dict(d)


@pytest.mark.parametrize(("position", "state"), [(0, 2), (1, 2), (2, 3), (5, 4), (7, 6), (0, -1)])
def test_from_dict_rejects_states_not_yet_computed(position: int, state: int) -> None:
    d = _valid_dict()
    d["normal"][position] = ["sep_conv_3x3", state]
    with pytest.raises(ValueError, match="not yet computed"):
        Genotype.from_dict(d)


def _broken(d: dict[str, Any], what: str) -> Any:
    """``d`` (a valid genotype dict) broken in one way."""
    if what == "unknown op":
        d["normal"][2] = ["conv_7x7", 0]
    elif what == "input out of range":
        d["reduce"][5] = ["sep_conv_3x3", 7]
    elif what == "three nodes":
        d["normal"] = d["normal"][:6]
    elif what == "five nodes":
        d["reduce"] = [*d["reduce"], ["skip_connect", 0], ["skip_connect", 1]]
    elif what == "not a pair":
        d["normal"][0] = "sep_conv_3x3"
    elif what == "float input":
        d["normal"][1] = ["skip_connect", 0.5]
    elif what == "wrong concat":
        d["normal_concat"] = [2, 3, 4]
    elif what == "metrics json":
        return {"search/arch_top1_err": 3.1, "profile": "tiny"}
    elif what == "a list":
        return [d]
    return d


BROKEN = {  # how each break shows in the message
    "unknown op": "normal[2] op 'conv_7x7' is not a DARTS primitive",
    "input out of range": "reduce[5] (node 2) reads state 7, not yet computed",
    "three nodes": "normal has 6 [op, input] pairs, not 8",
    "five nodes": "reduce has 10 [op, input] pairs, not 8",
    "not a pair": "normal[0] = 'sep_conv_3x3' is not an [op, input] pair",
    "float input": "normal[1] input 0.5 is not an integer",
    "wrong concat": "normal_concat is [2, 3, 4], not [2, 3, 4, 5]",
    "metrics json": "lacks ['normal', 'normal_concat', 'reduce', 'reduce_concat']",
    "a list": "holds a JSON list, not an object",
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_loader_refuses_a_broken_file_naming_it_the_problem_and_the_shape(
    what: str, tmp_path: Path
) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_broken(_valid_dict(), what)))
    with pytest.raises(GenotypeError) as info:
        load_genotype(path)
    message = str(info.value)
    assert message.startswith(f"genotype file {path}: {BROKEN[what]}"), message
    assert '"normal_concat": [2, 3, 4, 5]' in message and "sep_conv_3x3" in message
    assert "\n" not in message and "Traceback" not in message
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text (byte 0x89 at offset 0)"),
        (b'{"normal": [', "is not JSON (Expecting value at line 1, column 13)"),
        (b"", "is not JSON (Expecting value at line 1, column 1)"),
    ],
)
def test_loader_refuses_binary_and_non_json_files(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "cell.json"
    path.write_bytes(content)
    with pytest.raises(GenotypeError, match="Expected a JSON object") as info:
        load_genotype(str(path))
    assert str(info.value).startswith(f"genotype file {path} {problem}"), str(info.value)


def test_loader_missing_file_folder_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=f"genotype file {tmp_path}/nope.json not found"):
        load_genotype(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError):  # MissingInputError is one: callers may catch it
        load_genotype("nope.json", root=tmp_path)
    (tmp_path / "cells.json").mkdir()
    with pytest.raises(GenotypeError, match="is a folder"):
        load_genotype(tmp_path / "cells.json")
    with pytest.raises(UnknownGenotypeError, match="'pc_darts_mnist'; known: darts_v2") as info:
        load_genotype("pc_darts_mnist")
    assert isinstance(info.value, KeyError) and not str(info.value).startswith("'")


def test_loader_takes_names_files_mappings_and_genotypes(tmp_path: Path) -> None:
    cifar = get_genotype("pc_darts_cifar")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.json").write_text(json.dumps(cifar.to_dict()))
    (tmp_path / "cell").write_text(json.dumps(cifar.to_dict()))  # an existing file, no suffix
    assert load_genotype("pc_darts_cifar") is cifar
    assert load_genotype(cifar) is cifar
    assert load_genotype(cifar.to_dict()) == cifar
    assert load_genotype(tmp_path / "sub" / "g.json") == cifar
    assert load_genotype("sub/g.json", root=tmp_path) == cifar
    assert load_genotype("cell", root=tmp_path) == cifar
    with pytest.raises(GenotypeError, match="genotype mapping: normal\\[2\\] op 'conv_7x7'"):
        load_genotype(_broken(_valid_dict(), "unknown op"))


def test_get_genotype_unknown_name_lists_known() -> None:
    with pytest.raises(KeyError, match="pc_darts_cifar") as info:
        get_genotype("pc_darts_mnist")
    for name in GENOTYPES:
        assert name in str(info.value)


def reference_parse(alphas: np.ndarray, betas: np.ndarray | None) -> list[tuple[str, int]]:
    """method §4 written out plainly, in float32."""
    w = torch.softmax(torch.as_tensor(alphas, dtype=torch.float32), dim=-1).numpy()
    if betas is not None:
        w = w * edge_weights(torch.as_tensor(betas, dtype=torch.float32)).numpy()[:, None]
    gene, start = [], 0
    for node in range(4):
        rows = w[start : start + node + 2]
        scores = [max(row[k] for k in range(OPS) if k != NONE) for row in rows]
        best_edges = sorted(range(node + 2), key=lambda i: (-scores[i], i))[:2]
        for i in best_edges:
            ops = [k for k in range(OPS) if k != NONE]
            gene.append((PRIMITIVES[max(ops, key=lambda k: (rows[i][k], -k))], i))
        start += node + 2
    return gene


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("with_betas", [True, False])
def test_derive_matches_plain_rule(seed: int, with_betas: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    an, ar = torch.randn(EDGES, OPS, generator=g), torch.randn(EDGES, OPS, generator=g)
    bn, br = torch.randn(EDGES, generator=g), torch.randn(EDGES, generator=g)
    betas = (bn, br) if with_betas else (None, None)
    got = derive_genotype(an, ar, *betas)
    assert list(got.normal) == reference_parse(an.numpy(), bn.numpy() if with_betas else None)
    assert list(got.reduce) == reference_parse(ar.numpy(), br.numpy() if with_betas else None)
    assert got.normal_concat == got.reduce_concat == (2, 3, 4, 5)


def test_derive_without_betas_picks_by_max_non_none_softmax() -> None:
    alphas = torch.zeros(EDGES, OPS)
    op = PRIMITIVES.index
    # node 0 (edges 0, 1 <- states 0, 1): input 1 stronger
    alphas[0, op("max_pool_3x3")] = 1.0
    alphas[1, op("sep_conv_3x3")] = 2.0
    # node 1 (edges 2, 3, 4 <- states 0, 1, 2): edge 3 has the largest alpha, on 'none',
    # which leaves its other ops weakest: it must lose.
    alphas[2, op("skip_connect")] = 1.0
    alphas[3, NONE] = 10.0
    alphas[3, op("sep_conv_5x5")] = 1.5
    alphas[4, op("dil_conv_5x5")] = 3.0
    got = derive_genotype(alphas, alphas)
    assert got.normal[:4] == (
        ("sep_conv_3x3", 1),
        ("max_pool_3x3", 0),
        ("dil_conv_5x5", 2),
        ("skip_connect", 0),
    )
    # nodes 2 and 3: all alphas equal, so ties go to the lower input and the lower op
    assert got.normal[4:] == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 2
    assert got.reduce == got.normal


def test_betas_can_change_the_chosen_edges() -> None:
    alphas = torch.zeros(EDGES, OPS)
    alphas[0, PRIMITIVES.index("sep_conv_3x3")] = 1.0
    alphas[2, PRIMITIVES.index("sep_conv_3x3")] = 1.0
    betas = torch.zeros(EDGES)
    assert derive_genotype(alphas, alphas, betas, betas) == derive_genotype(alphas, alphas)
    betas[1] = 5.0  # node 0: edge from state 1 dominates despite its flat alphas
    betas[3] = 5.0
    betas[4] = 5.0  # node 1: edges from states 1 and 2 beat the sep_conv on state 0
    got = derive_genotype(alphas, alphas, betas, betas)
    assert got.normal[0] == ("max_pool_3x3", 1)
    assert {idx for _, idx in got.normal[2:4]} == {1, 2}


def test_none_is_never_chosen() -> None:
    g = torch.Generator().manual_seed(0)
    alphas = torch.randn(EDGES, OPS, generator=g)
    alphas[:, NONE] = 20.0  # 'none' has by far the largest alpha everywhere
    for betas in (None, torch.randn(EDGES, generator=g)):
        got = derive_genotype(alphas, alphas, betas, betas)
        ops = [name for name, _ in got.normal + got.reduce]
        assert "none" not in ops
        assert list(got.normal) == reference_parse(
            alphas.numpy(), None if betas is None else betas.numpy()
        )


def test_numpy_and_torch_inputs_agree() -> None:
    g = torch.Generator().manual_seed(3)
    arch = [torch.randn(EDGES, OPS, generator=g), torch.randn(EDGES, OPS, generator=g)]
    betas = [torch.randn(EDGES, generator=g), torch.randn(EDGES, generator=g)]
    from_torch = derive_genotype(*arch, *betas)
    assert derive_genotype(*(t.numpy() for t in arch), *(t.numpy() for t in betas)) == from_torch
    assert derive_genotype(*(t.double().numpy() for t in arch + betas)) == from_torch
    param = torch.nn.Parameter(arch[0].clone())  # requires grad: must not break derivation
    assert derive_genotype(param, arch[1], *betas) == from_torch
    assert derive_genotype(arch[0].numpy(), arch[1].numpy()) == derive_genotype(*arch)


def test_derive_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="columns"):
        derive_genotype(torch.zeros(EDGES, 7), torch.zeros(EDGES, 7))
    with pytest.raises(ValueError, match="13 edges"):
        derive_genotype(torch.zeros(13, OPS), torch.zeros(13, OPS))


def test_edge_weights_softmax_per_node() -> None:
    betas = torch.randn(EDGES)
    w = edge_weights(betas)
    sums = [w[s : s + n].sum().item() for s, n in [(0, 2), (2, 3), (5, 4), (9, 5)]]
    assert sums == pytest.approx([1.0] * 4)
    torch.testing.assert_close(w[2:5], torch.softmax(betas[2:5], dim=0))
    assert steps_for_edges(EDGES) == 4


def _one_op_alphas(edges: list[tuple[int, float]]) -> torch.Tensor:
    """(E, 8) zeros but one op per edge at logit log(r): softmax r/(r+7) there, 1/(r+7) else."""
    alphas = torch.zeros(len(edges), len(PRIMITIVES))
    for e, (op, ratio) in enumerate(edges):
        alphas[e, op] = float(np.log(ratio))
    return alphas


def test_derivation_margin_is_the_smallest_lead_worked_by_hand() -> None:
    # Two nodes (5 edges). Node 0 keeps both inputs: op leads (5-1)/12 and (3-1)/10.
    # Node 1 keeps edges 2 and 3 (9/16, 4/11) over edge 4 (2/9): op leads 8/16 and 3/11,
    # edge lead 4/11 - 2/9 = 14/99, the smallest.
    alphas = _one_op_alphas([(3, 5.0), (4, 3.0), (5, 9.0), (6, 4.0), (7, 2.0)])
    assert derivation_margin(alphas, alphas) == pytest.approx(14 / 99, rel=1e-5)
    # Edge normalization scales each node's edges by 1/(its inputs) with zero betas.
    betas = torch.zeros(5)
    expected = min(4 / 12 / 2, 2 / 10 / 2, 8 / 16 / 3, 3 / 11 / 3, 14 / 99 / 3)
    assert derivation_margin(alphas, alphas, betas, betas) == pytest.approx(expected, rel=1e-5)
    # The normal and the reduce cell both count: a tie in one makes the margin 0.
    assert derivation_margin(alphas, torch.zeros(5, len(PRIMITIVES))) == 0.0


def test_derivation_margin_bounds_what_noise_can_flip() -> None:
    """Any perturbation of the ranked weights below half the margin keeps the genotype."""
    gen = torch.Generator().manual_seed(0)
    alphas_n, alphas_r = torch.randn(14, 8, generator=gen), torch.randn(14, 8, generator=gen)
    margin = derivation_margin(alphas_n, alphas_r)
    assert margin > 0
    base = derive_genotype(alphas_n, alphas_r)
    for _ in range(20):
        # log-softmax shift: softmax(a + eps) moves each weight by < margin/2 for small eps
        eps = 0.2 * margin * (torch.rand(14, 8, generator=gen) - 0.5)
        assert derive_genotype(alphas_n + eps, alphas_r + eps) == base


def test_derivation_choices_are_the_derived_pairs_with_their_leads() -> None:
    from pcdarts.derivation import derivation_choices

    gen = torch.Generator().manual_seed(1)
    alphas_n, alphas_r = torch.randn(14, 8, generator=gen), torch.randn(14, 8, generator=gen)
    betas_n, betas_r = torch.randn(14, generator=gen), torch.randn(14, generator=gen)
    choices = derivation_choices(alphas_n, alphas_r, betas_n, betas_r)
    genotype = derive_genotype(alphas_n, alphas_r, betas_n, betas_r)
    for cell, gene in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        mine = [c for c in choices if c.cell == cell]
        assert [(c.op, c.input) for c in mine] == list(gene)
        assert [c.node for c in mine] == [n for n in range(4) for _ in range(2)]
    margin = derivation_margin(alphas_n, alphas_r, betas_n, betas_r)
    assert min(c.lead for c in choices) == margin > 0
    # Worked example above: node 1's second edge wins by 4/11 - 2/9 over the dropped one,
    # its first by 9/16 - 2/9 (its op lead 8/16 is larger).
    alphas = _one_op_alphas([(3, 5.0), (4, 3.0), (5, 9.0), (6, 4.0), (7, 2.0)])
    leads = [c.lead for c in derivation_choices(alphas, alphas) if c.cell == "normal"]
    expected = [4 / 12, 2 / 10, 9 / 16 - 2 / 9, 14 / 99]
    assert leads == pytest.approx(expected, rel=1e-5)


def test_stable_since_counts_the_unchanged_tail() -> None:
    a, b = get_genotype("pc_darts_cifar"), get_genotype("pc_darts_imagenet")
    assert stable_since([a, b, a, a]) == 2
    assert stable_since([b, b, b]) == 0
    assert stable_since([a]) == 0
    assert stable_since([a, a, b]) == 2


def test_random_genotype_is_a_seeded_uniform_draw_from_the_darts_space() -> None:
    from pcdarts.genotypes import random_genotype
    from pcdarts.space import INPUTS_PER_NODE, NODES

    g = random_genotype(3)
    assert g == random_genotype(3) != random_genotype(4)
    assert load_genotype("random:3") == g and load_genotype(g.to_dict()) == g
    for gene in (g.normal, g.reduce):
        assert len(gene) == NODES * INPUTS_PER_NODE
        for node in range(NODES):
            pair = gene[node * INPUTS_PER_NODE : (node + 1) * INPUTS_PER_NODE]
            inputs = [source for _, source in pair]
            assert len(set(inputs)) == INPUTS_PER_NODE and max(inputs) < node + 2
            assert all(op != "none" for op, _ in pair)
    ops = {op for s in range(50) for op, _ in random_genotype(s).normal}
    assert ops == {op for op in PRIMITIVES if op != "none"}


@pytest.mark.parametrize("spec", ["random:", "random:x", "random:-1"])
def test_a_bad_random_spec_names_the_expected_form(spec: str) -> None:
    with pytest.raises(GenotypeError, match="expected random:<seed>"):
        load_genotype(spec)
