"""The report's pieces: when a genotype settled, and tables that never pass a tiny run off."""

from __future__ import annotations

import pytest

from stages.report import Row, RunInfo, _table_html, _table_md, stable_since


def _history(changed: list[bool]) -> list[dict[str, object]]:
    return [{"epoch": e, "genotype_changed": c} for e, c in enumerate(changed)]


def test_stable_since_is_the_epoch_after_the_last_change() -> None:
    assert stable_since(_history([True, True, False, False])) == 2
    assert stable_since(_history([True, False, True, False])) == 3
    assert stable_since(_history([True, False, False, True])) is None
    assert stable_since([]) is None


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


def test_k_ablation_takes_the_newest_run_per_k_of_this_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stages.report as report
    from pipeline.config import Params

    def run(k: str, profile: str, seconds: float) -> dict[str, object]:
        metrics = {"cost/wall_seconds": seconds, "cost/peak_memory_mb": 100.0 * int(k)}
        return {
            "run_id": f"{k}{profile}{seconds}".ljust(8, "x"),
            "params": {"network.k": k, "profile": profile},
            "metrics": {**metrics, "arch/top1_err": 10.0},
        }

    runs = [
        run("4", "tiny", 1.0),
        run("2", "tiny", 2.0),
        run("4", "tiny", 9.0),
        run("1", "paper", 5.0),
    ]
    monkeypatch.setattr(report, "finished_runs", lambda *a, **k: runs)
    params = Params(profile="tiny")
    text, table = report.k_ablation(params)  # type: ignore[misc]
    assert set(table) == {"2", "4"} and table["4"]["wall_seconds"] == 1.0  # newest first
    assert text.count("\n") == 3
    monkeypatch.setattr(report, "finished_runs", lambda *a, **k: runs[:1])
    assert report.k_ablation(params) is None
