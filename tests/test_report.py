"""The report's pieces: whether a search settled, and tables that never pass a tiny run off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pcdarts.errors import UserError
from pcdarts.genotypes import get_genotype, random_genotype
from reporting import memory_k, results
from reporting.render import Row, RunInfo, _table_html, _table_md, to_html, to_markdown
from reporting.statistics import edge_agreement, k_ablation, searched_vs_random


def test_difference_only_for_comparable_runs() -> None:
    tiny = RunInfo("tiny, digits", comparable=False).row("err", 3.0, 2.57, "%", "train")
    paper = RunInfo("paper, real data", comparable=True).row("err", 3.0, 2.57, "%", "train")
    assert tiny.cells()[3] == "" and "tiny, digits" in tiny.cells()
    assert paper.cells()[3] == "+0.43"
    md, page = _table_md([tiny, paper]), _table_html([tiny, paper])
    assert md.count("\n") == 3 and "| err | 3 | 2.57 |" in md
    assert page.count("<tr>") == 3


def test_an_unconfirmed_paper_number_is_labelled_and_never_differenced() -> None:
    row = RunInfo("paper, real data", comparable=True).row(
        "bbox AP", 30.0, 28.9, "AP (%)", "transfer_ssd", paper_known="unconfirmed"
    )
    assert row.cells()[2] == "28.9 (unconfirmed)" and row.cells()[3] == ""


def test_missing_values_print_as_a_dash() -> None:
    row = Row("x", None, 1.0, "M", "derive", "tiny, digits", False)
    assert row.cells()[1] == "—"


def test_k_ablation_lists_every_k_of_the_family() -> None:
    def metrics(seconds: float, k: int) -> dict[str, object]:
        cost = {"wall_seconds": seconds, "peak_memory_mb": 100.0 * k}
        return {"cost": cost, "arch/top1_err": 10.0}

    (header, rows), table = k_ablation({4: metrics(1.0, 4), 2: metrics(2.0, 2)})
    assert [r[0] for r in rows] == ["2", "4"] and len(header) == 4
    assert table["4"] == {"wall_seconds": 1.0, "peak_memory_mb": 400.0, "arch_err": 10.0}
    assert to_markdown([("grid", (header, rows))]).count("\n") == 4
    assert to_html([("grid", (header, rows))]).count("<tr>") == 3


def test_edge_agreement_counts_shared_input_op_pairs_per_node() -> None:
    g = get_genotype("pc_darts_cifar")
    assert edge_agreement(g, g) == {"normal": 1.0, "reduce": 1.0}
    normal = list(g.normal)
    op, source = normal[0]
    normal[0] = ("max_pool_3x3" if op != "max_pool_3x3" else "avg_pool_3x3", source)  # one op
    other = type(g)(normal, g.normal_concat, g.reduce, g.reduce_concat)
    assert edge_agreement(other, g) == {"normal": 7 / 8, "reduce": 1.0}
    assert 0.0 <= edge_agreement(random_genotype(0), g)["reduce"] <= 1.0


def test_searched_vs_random_says_plainly_when_search_does_not_win() -> None:
    text, _, stats = searched_vs_random("cifar10", 5.0, {"random:0": 3.0, "random:1": 4.0})
    assert "does NOT beat the random cells" in text and not stats["beats_random"]
    text, (header, rows), stats = searched_vs_random("cifar10", 1.0, {"a": 3.0, "b": 4.0})
    assert "beats the random cells" in text and stats["beats_random"]
    assert rows[-1][0] == "random, mean +- std over 2" and stats["mean"] == 3.5


def test_decision_text_says_plainly_whether_the_search_settled() -> None:
    from reporting.results import _decision_text

    d = {"epochs": 20, "derivation_margin": 0.031, "alpha_entropy_normalised": 0.7}
    settled = _decision_text("cifar10", {**d, "stable_since_epoch": 15, "stable_epochs": 5})
    assert "it decided" in settled and "from epoch 15 on (5 of 20" in settled
    moving = _decision_text("cifar10", {**d, "stable_since_epoch": 16, "stable_epochs": 4 - 1})
    assert "did not settle" in moving and "0.0310" in moving


def _memory_record() -> dict[str, Any]:
    run = {"k": 4, "batch": 64, "step_s": 4.21, "peak_mb": 2660.0}
    return {
        "measured": {
            "date": "2026-12-05",
            "commit": "abc1234",
            "machine": "Some CPU, 2 cores, 25 GB",
            "device": "cpu",
            "threads": 1,
            "command": "python benchmarks/memory_k.py",
            "wall_s": 420.0,
            "peak": "the process's resident-set high-water",
        },
        "setup": {
            "C": 16,
            "layers": 8,
            "steps": 2,
            "warmup": 1,
            "budget_gb": 11.0,
            "batches": [64],
        },  # fmt: skip
        "rows": [
            {
                "k": 1,
                "runs": {"64": {**run, "k": 1, "peak_mb": 6850.0}},
                "mb_per_image": 93.7,
                "budget_batch": 104,
                "budget_epoch_min": 84.0,
            },  # fmt: skip
            {
                "k": 4,
                "runs": {"64": run},
                "mb_per_image": 29.4,
                "budget_batch": 344,
                "budget_epoch_min": 29.0,
            },  # fmt: skip
        ],
    }


def test_the_memory_claim_shows_the_benchmark_table_beside_the_paper(tmp_path: Path) -> None:
    path = tmp_path / "memory_k.json"
    path.write_text(json.dumps(_memory_record()))
    (header, rows), measured_on, numbers = memory_k.load(path)
    assert header[1] == "batch 64: s/step, peak" and header[-2] == "largest batch in 11 GB"
    assert rows[1] == ["4", "4.21 s, 2.66 GB", "29.4", "3.19x", "344", "29"]
    assert "Some CPU, 2 cores, 25 GB" in measured_on and "C=16, 8 cells" in measured_on
    assert numbers["4"] == {"mb_per_image": 29.4, "budget_batch": 344}


def test_the_report_says_how_to_measure_the_memory_claim_when_it_was_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    summary: dict[str, Any] = {}
    blocks = results.memory_k_blocks(summary)
    assert ("p", memory_k.PAPER) in blocks and ("p", memory_k.NOT_MEASURED) in blocks
    assert "memory_k" not in summary
    (tmp_path / memory_k.MEMORY_K_FILE).parent.mkdir(parents=True)
    (tmp_path / memory_k.MEMORY_K_FILE).write_text(json.dumps(_memory_record()))
    kinds = [kind for kind, _ in results.memory_k_blocks(summary)]
    assert kinds == ["h2", "p", "grid", "p"] and set(summary["memory_k"]) == {"1", "4"}


def test_a_damaged_memory_table_is_named_with_how_to_remeasure(tmp_path: Path) -> None:
    path = tmp_path / "memory_k.json"
    path.write_text('{"rows": []}')
    with pytest.raises(UserError, match=r"memory_k.json is damaged.*make bench-memory"):
        memory_k.load(path)


def test_the_readme_memory_table_is_the_committed_measurement() -> None:
    """README numbers come from benchmarks/results/memory_k.json: `python -m reporting.memory_k
    readme` renders the block; a new measurement without it fails here."""
    readme = memory_k.README.read_text()
    block = readme[readme.index(memory_k.BEGIN) : readme.index(memory_k.END) + len(memory_k.END)]
    assert block == memory_k.readme_block(memory_k.README.parent / memory_k.MEMORY_K_FILE)
