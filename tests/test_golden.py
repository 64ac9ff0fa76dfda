"""The golden result: a run within tolerance passes, one outside fails naming the value, and
the README's tiny numbers are the committed expected file's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import golden
from pipeline.golden import BEGIN, END, compare, kind_of, render_readme_block

GENOTYPE = {
    "normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]] * 4,
    "reduce_concat": [2, 3, 4, 5],
}
EXPECTED: dict[str, Any] = {
    "measured_on": {"machine": "m", "commit": "abc", "date": "d", "dvc_repro_seconds": 700.0},
    "tolerances": {"error_points": 1.0, "ap": 0.05},
    "values": {
        "train_cifar10@searched/test/top1_err": 3.0,
        "transfer_ssd/coco/bbox_mAP_50": 0.54,
        "search@cifar10-0/genotype": GENOTYPE,
        "search@cifar10-0/stable_since_epoch": 7,
    },
}


def _actual(**changes: Any) -> dict[str, Any]:
    return {**EXPECTED["values"], **changes}


def test_a_run_within_tolerance_passes() -> None:
    checks = compare(EXPECTED, _actual(**{"train_cifar10@searched/test/top1_err": 3.99}))
    assert all(c.ok for c in checks) and len(checks) == 4


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("train_cifar10@searched/test/top1_err", 4.01, "expected 3 +- 1, got 4.01"),
        ("transfer_ssd/coco/bbox_mAP_50", 0.48, "expected 0.54 +- 0.05, got 0.48"),
        ("search@cifar10-0/stable_since_epoch", 8, "expected 7 +- 0, got 8"),
        ("search@cifar10-0/genotype", None, "missing"),
    ],
)
def test_a_value_outside_fails_naming_it(key: str, value: Any, says: str) -> None:
    actual = (
        _actual(**{key: value})
        if value is not None
        else {k: v for k, v in EXPECTED["values"].items() if k != key}
    )
    failed = [c for c in compare(EXPECTED, actual) if not c.ok]
    assert [c.key for c in failed] == [key]
    assert says in failed[0].line() and failed[0].line().startswith("FAIL")


def test_a_changed_genotype_names_the_edge() -> None:
    other = {**GENOTYPE, "normal": [["dil_conv_3x3", 0], *GENOTYPE["normal"][1:]]}
    (failed,) = [
        c for c in compare(EXPECTED, _actual(**{"search@cifar10-0/genotype": other})) if not c.ok
    ]
    assert "normal[0] sep_conv_3x3<-0 became dil_conv_3x3<-0" in failed.line()


def test_every_value_key_has_a_tolerance_kind() -> None:
    assert kind_of("train_imagenet@searched:cifar10/test/top5_err") == "error_points"
    with pytest.raises(golden.GoldenError, match="no tolerance kind"):
        kind_of("train_cifar10@searched/wall_seconds")


def test_the_readme_block_is_the_committed_expected_file() -> None:
    """README numbers come from expected/tiny.json: `python -m pipeline.golden readme`."""
    reference = golden.load_reference()
    readme = golden.README.read_text()
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    assert block == render_readme_block(reference)
    assert all(kind_of(key) for key in reference["values"])
    assert any(key.endswith("/genotype") for key in reference["values"])
    assert reference["measured_on"]["cpu_kernels"] == "avx2"
    assert reference["measured_on"]["cpu_capability"] == "AVX2"


PINNED = {
    "cpu_kernels": "avx2",
    "configured": "avx2",
    "cpu_capability": "AVX2",
    "machine": "x86_64",
    "cpu_has_avx2": True,
}
STAGES = ("search@cifar10-0", "train_cifar10@searched", "transfer_ssd")


def _workspace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, values: dict[str, Any], **runtime: Any
) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(EXPECTED))
    monkeypatch.setattr(golden, "EXPECTED", tmp_path / "tiny.json")
    monkeypatch.setattr(golden, "REPO_ROOT", tmp_path.parent)
    monkeypatch.setattr(golden, "load_params", lambda: None)
    monkeypatch.setattr(golden, "collect", lambda p: values)
    record = {**PINNED, **runtime} if runtime.get("missing") is None else None
    metrics = {s: {"runtime": record} if record else {} for s in STAGES}
    monkeypatch.setattr(golden, "stage_metrics", lambda p: metrics)


def test_a_run_within_tolerance_on_pinned_kernels_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _workspace(monkeypatch, tmp_path, values=_actual())
    assert golden.check() == 0
    out = capsys.readouterr().out
    assert "4 of 4 within tolerance of" in out and "this run reproduces" in out


def test_a_run_outside_tolerance_fails_naming_each_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _workspace(monkeypatch, tmp_path, values=_actual(**{"transfer_ssd/coco/bbox_mAP_50": 0.1}))
    assert golden.check() == 1
    out = capsys.readouterr().out
    assert "3 of 4 within tolerance" in out
    assert "FAIL transfer_ssd/coco/bbox_mAP_50: expected 0.54 +- 0.05, got 0.1" in out


@pytest.mark.parametrize(
    ("runtime", "says"),
    [
        (
            {"cpu_kernels": "native", "configured": "native", "cpu_capability": "AVX512"},
            "search@cifar10-0 and 2 other stages ran on the CPU's native AVX512 kernels "
            "(runtime.cpu_kernels: native)",
        ),
        ({"machine": "aarch64", "cpu_has_avx2": False}, "ran on a aarch64 CPU, not x86-64"),
        ({"cpu_has_avx2": False, "cpu_kernels": "native"}, "x86-64 CPU without AVX2"),
        ({"missing": True}, "recorded no CPU kernels"),
    ],
)
def test_a_run_on_other_kernels_is_one_line_not_a_wall_of_differences(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    runtime: dict[str, Any],
    says: str,
) -> None:
    far = _actual(**{"train_cifar10@searched/test/top1_err": 9.0, "search@cifar10-0/genotype": {}})
    _workspace(monkeypatch, tmp_path, values=far, **runtime)
    assert golden.check() == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("check-repro: ") and says in line, line


def test_the_readme_block_renders_the_reference_run() -> None:
    reference = {
        **EXPECTED,
        "measured_on": {**EXPECTED["measured_on"], "cpu_capability": "AVX2"},
    }
    block = render_readme_block(reference)
    assert "| result | value | tolerance |" in block
    assert "| train_cifar10@searched/test/top1_err | 3 | +- 1 |" in block
    assert "normal: sep_conv_3x3<-0 skip_connect<-1" in block
    assert "kernels pinned to AVX2" in block


def test_only_a_run_on_pinned_kernels_can_become_the_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _workspace(monkeypatch, tmp_path, values=_actual(), cpu_kernels="native")
    with pytest.raises(golden.GoldenError, match="not a reference run: .* native"):
        golden.update("m", 1.0)
