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


def test_the_readme_block_is_the_committed_expected_files() -> None:
    """README numbers come from expected/tiny-*.json: `python -m pipeline.golden readme`."""
    references = golden.load_references()
    readme = golden.README.read_text()
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    assert block == render_readme_block(references)
    for ref in references.values():
        assert all(kind_of(key) for key in ref["values"])
        assert any(key.endswith("/genotype") for key in ref["values"])
        assert ref["measured_on"]["cpu_kernels"]


def _workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **refs: dict[str, Any]) -> None:
    for name, ref in refs.items():
        (tmp_path / f"tiny-{name}.json").write_text(json.dumps(ref))
    monkeypatch.setattr(golden, "EXPECTED_DIR", tmp_path)
    monkeypatch.setattr(golden, "load_params", lambda: None)
    monkeypatch.setattr(golden, "collect", lambda p: _actual())


def test_a_run_that_matches_one_reference_run_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _actual(**{"train_cifar10@searched/test/top1_err": 9.0})
    _workspace(monkeypatch, tmp_path, avx2={**EXPECTED, "values": other}, avx512=EXPECTED)
    assert golden.check() == 0
    out = capsys.readouterr().out
    assert "3 of 4 within tolerance of tiny-avx2.json" in out
    assert "this run reproduces expected/tiny-avx512.json" in out


def test_a_run_that_matches_none_fails_against_the_closest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    far = _actual(**{"train_cifar10@searched/test/top1_err": 9.0, "search@cifar10-0/genotype": {}})
    near = _actual(**{"transfer_ssd/coco/bbox_mAP_50": 0.1})
    _workspace(monkeypatch, tmp_path, a={**EXPECTED, "values": far}, b={**EXPECTED, "values": near})
    assert golden.check() == 1
    out = capsys.readouterr().out
    assert "the closest is expected/tiny-b.json" in out
    assert "FAIL transfer_ssd/coco/bbox_mAP_50: expected 0.1 +- 0.05, got 0.54" in out
    assert "CPU kernels here are" in out


def test_the_readme_block_has_a_column_per_reference_run() -> None:
    other = {**EXPECTED, "measured_on": {**EXPECTED["measured_on"], "date": "e"}}
    other = {**other, "values": _actual(**{"train_cifar10@searched/test/top1_err": 4.5})}
    block = render_readme_block({"tiny-x.json": EXPECTED, "tiny-y.json": other})
    assert "| result | `tiny-x.json` | `tiny-y.json` | tolerance |" in block
    assert "| train_cifar10@searched/test/top1_err | 3 | 4.5 | +- 1 |" in block
    assert "normal: sep_conv_3x3<-0 skip_connect<-1" in block
