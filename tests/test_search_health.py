"""The report's per-search verdict (issue 25): settled, collapsed, stopped or still changing,
said plainly, with the warm-up marked and the eigenvalue when measured; and its figure."""

from __future__ import annotations

from typing import Any

import torch

from pcdarts.diagnostics import changed_pairs, op_counts
from pcdarts.genotypes import Genotype, get_genotype
from reporting import search_diagnostics

PC = get_genotype("pc_darts_cifar")
DARTS = get_genotype("darts_v2")
COLLAPSED = Genotype(
    tuple([("skip_connect", 0), ("skip_connect", 1)] * 2 + [("max_pool_3x3", 0)] * 4),
    (2, 3, 4, 5),
    PC.reduce,
    (2, 3, 4, 5),
)


def _history(
    genotypes: list[Genotype], frozen: int = 2, eigen: list[float | None] | None = None
) -> list[dict[str, Any]]:
    alphas = torch.softmax(torch.zeros(14, 8), -1).tolist()
    rows, previous, since = [], None, 0
    for epoch, genotype in enumerate(genotypes):
        if previous is not None and genotype != previous:
            since = epoch
        row: dict[str, Any] = {
            "epoch": epoch,
            "genotype": genotype.to_dict(),
            "stable_since_epoch": since,
            "alphas_normal": alphas,
            "alphas_reduce": alphas,
            "betas_normal": [0.5] * 14,
            "betas_reduce": [0.5] * 14,
            "arch_frozen": epoch < frozen,
            **op_counts(genotype),
            **changed_pairs(previous, genotype),
        }
        if eigen is not None and eigen[epoch] is not None:
            row["hessian"] = {"eigenvalue": eigen[epoch], "status": "ok"}
        rows.append(row)
        previous = genotype
    return rows


def test_a_search_whose_cell_holds_has_settled_and_the_warm_up_is_named() -> None:
    # held from epoch 1 (in the warm-up) to 7: the 6 searching epochs, all stable
    history = _history([DARTS] + [PC] * 7)
    v = search_diagnostics.verdict(history)
    assert v["status"] == "settled" and v["unchanged_from_epoch"] == 2
    assert v["stable_searched_epochs"] == 6 and v["frozen_epochs"] == 2
    text = search_diagnostics.sentence("search@cifar10-0", v)
    assert "epochs 0-1 were the weight-only warm-up (architecture frozen); settled" in text
    assert "settled: its cell held for the last 6 of its 6 searching epochs" in text
    assert "Hessian eigenvalue not measured" in text


def test_a_cell_changing_at_the_end_is_still_changing() -> None:
    v = search_diagnostics.verdict(_history([PC] * 7 + [DARTS]))
    assert v["status"] == "still changing" and v["stable_searched_epochs"] == 1


def test_a_normal_cell_of_parameter_free_ops_has_collapsed() -> None:
    v = search_diagnostics.verdict(_history([PC] * 4 + [COLLAPSED] * 4, eigen=[None, 1.0] * 4))
    assert v["status"] == "collapsed" and v["param_free_normal"] == 8
    text = search_diagnostics.sentence("search_k@2", v)
    assert "collapsed: 8 of the normal cell's 8 pairs are parameter-free ops" in text
    assert "Hessian eigenvalue 1 at its first evaluation, 1 at its last (4 evaluations)" in text


def test_a_stopped_search_says_which_rule_and_when() -> None:
    history = _history([PC] * 5, eigen=[1.0, None, 2.0, None, 4.0])
    history[-1]["stop"] = {
        "rule": "darts_plus",
        "epoch": 4,
        "reason": "the normal cell holds 2 skip connections, at least 2",
        "compared_epoch": None,
    }
    history[3]["hessian"] = {"eigenvalue": None, "status": "nan"}
    v = search_diagnostics.verdict(history)
    assert v["status"] == "stopped" and v["eigenvalues_not_finite"] == 1
    text = search_diagnostics.sentence("search@imagenet-1", v)
    assert "stopped by the darts_plus rule after epoch 4: the normal cell holds 2" in text
    assert "(3 evaluations, 1 not finite)" in text
    header, rows = search_diagnostics.table({"search@imagenet-1": v})
    assert rows[0][:2] == ["search@imagenet-1", "stopped"] and rows[0][-1] == "1 / 4"
    fig = search_diagnostics.figure(history, "stopped")
    assert len(fig.axes) == 2 * 14 + 3 + 1  # edge panels, counts, changes, eigenvalue, legend
