"""The dry run (pipeline/dry_run.py, `make dry-run`): the paper profile's stages for a few
steps on paper-format data, their forecast, and nothing DVC tracks changed; bad input
refused as the real run refuses it."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.dry_run import main
from pipeline.forecast_table import format_table

ROOT = Path(__file__).resolve().parents[1]
NO_MMDET = importlib.util.find_spec("mmdet") is None
# What DVC tracks or a run keeps, relative to the repository: none may change.
TRACKED = ("params.yaml", "dvc.yaml", "dvc.lock", "outputs", "data", ".dvc/cache", ".checkpoints")
WORLD = 8  # dist.nproc_per_node of the test: the paper's ImageNet search on 8 GPUs (method §5)
# The paper's global batches and network sizes (method §5-6; SSD: 8 GPUs x 24, method §7)
PAPER = {
    "search@cifar10": ({"C": 16, "layers": 8, "k": 4, "image_size": 32}, 256),
    "search@imagenet": ({"C": 16, "layers": 8, "k": 2, "image_size": 224}, 1024),
    "search_k": ({"C": 16, "layers": 8, "image_size": 32}, 256),
    "train_cifar10": ({"C": 36, "layers": 20, "image_size": 32}, 96),
    "train_imagenet": ({"C": 48, "layers": 14, "image_size": 224}, 1024),
    "transfer_ssd": ({"config": "ssdlite_pcdarts_320_coco", "C": 48, "layers": 14}, 192),
}
DRY_RUN_TIMEOUT_S = 900  # measured 4-5 min on one core of the 2-core CPU machine


def _snapshot() -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under what DVC tracks: a change to any shows."""
    files: dict[str, tuple[int, int]] = {}
    for name in TRACKED:
        path = ROOT / name
        for f in [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []:
            if f.is_file():
                st = f.stat()
                files[str(f.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns)
    return files


def _diagnosis(result: subprocess.CompletedProcess[str], workspace: Path) -> str:
    """What a failed dry run said, and the log tail of each stage that left no row."""
    parts = [result.stdout[-2000:], result.stderr[-2000:]]
    for log in sorted((workspace / "rows").glob("*.log")):
        if not log.with_suffix(".json").exists():
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def _paper(stage: str) -> tuple[dict[str, Any], int]:
    family = stage.split("@")[0] if stage.startswith(("search_k", "train_")) else stage
    return PAPER[family.rsplit("-", 1)[0]]


@pytest.mark.slow
def test_paper_dry_run_on_paper_format_data_forecasts_every_stage(tmp_path: Path) -> None:
    before = _snapshot()
    workspace = tmp_path / "dry-run"
    command = [
        sys.executable,
        *("-m", "pipeline.dry_run", "profile=paper", "data.source=embedded", "device=cpu"),
        f"dist.nproc_per_node={WORLD}",
        *("--steps", "1", "--warmup-steps", "0", "--memory-budget-gb", "3"),
        *("--workspace", str(workspace)),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S
    )
    assert result.returncode == 0, _diagnosis(result, workspace)
    assert _snapshot() == before
    summary = json.loads((workspace / "forecast.json").read_text())
    assert summary["profile"] == "paper" and summary["world"] == WORLD
    rows = {row["stage"]: row for row in summary["stages"]}
    statuses = set()
    for stage, row in rows.items():
        if stage == "prepare" or stage.startswith(("derive", "report")):
            continue
        if stage == "transfer_ssd" and NO_MMDET:
            continue
        shape, global_batch = _paper(stage)
        assert {k: row["network"][k] for k in shape} == shape, stage
        if stage.startswith("search_k@"):
            assert row["network"]["k"] == int(stage.split("@")[1])
        m = row["measurement"]
        assert row["per_process_batch"] == m["batch"] == global_batch // WORLD, stage
        batches = [p["batch"] for p in m["points"]]
        if m["status"] == "measured":
            assert batches[-1] == m["batch"], stage  # its steps ran at the per-process batch
        else:
            assert m["status"] == "extrapolated" and "extrapolated from batches" in m["note"]
            assert max(batches) < m["batch"] and len(batches) >= 2, stage
        statuses.add(m["status"])
        f = row["forecast"]
        assert math.isfinite(f["wall_hours"]) and f["wall_hours"] > 0, stage
        assert f["device_days"] == pytest.approx(f["wall_hours"] * WORLD / 24), stage
        assert row["forecast_real_size"]["wall_hours"] > f["wall_hours"], stage  # more images
    assert statuses == {"measured", "extrapolated"}  # a 3 GB budget takes both paths
    assert rows["prepare"]["data"]["imagenet"]["classes"] == 1000
    assert rows["prepare"]["data"]["coco"]["classes"] == 80
    assert not summary["study"]["incomplete"] or NO_MMDET
    assert summary["study"]["wall_hours"] > 0
    assert "EXTRAPOLATED" in result.stdout and "**study**" in result.stdout


def test_missing_data_fails_in_prepare_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-cifar"
    workspace = tmp_path / "dry-run"
    argv = ["profile=paper", "device=cpu", f"data.cifar10_root={missing}"]
    assert main([*argv, "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err
    assert f"dry run stopped: prepare failed: prepare: {missing}/cifar-10-batches-py" in err
    assert not (workspace / "rows" / "search@cifar10-0.log").exists()  # nothing after prepare


def test_a_batch_the_world_does_not_divide_is_refused_before_any_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = tmp_path / "dry-run"
    assert main(["dist.nproc_per_node=3", "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dry run: conf/ with overrides ['dist.nproc_per_node=3']: search.")
    assert "must be divisible by the 3 processes" in err and "\n" not in err
    assert not (workspace / "rows").exists()


def _row(stage: str, status: str, points: list[int], note: str = "") -> dict[str, Any]:
    return {
        "stage": stage,
        "world": 8,
        "per_process_batch": 128,
        "device": "cpu",
        "device_name": "a CPU",
        "scaling": "8 processes",
        "epochs": {"epochs": 50, "warmup_epochs": 35},
        "measurement": {
            "status": status,
            "batch": 128,
            "seconds_per_step": {"warmup": 1.0, "search": 2.0},
            "peak_memory_mb": 5000.0,
            "points": [{"batch": b} for b in points],
            "note": note,
        },
        "forecast": {"wall_hours": 1.5, "device_days": 0.5, "steps": {"search": 30}},
        "steps_per_epoch": 2,
    }


def test_the_table_marks_extrapolated_rows_and_sums_the_study() -> None:
    summary = {
        "profile": "paper",
        "data_source": "real",
        "device": "cpu",
        "device_name": "a CPU",
        "memory": "resident-set high-water",
        "stages": [
            _row("search@imagenet-0", "extrapolated", [8, 16, 32]),
            _row("search_k@1", "does not fit", [8], "does not fit at batch 16 on this device"),
            {"stage": "report", "status": "not dry-run"},
        ],
        "study": {"wall_hours": 1.5, "device_days": 0.5, "incomplete": ["search_k@1"]},
    }
    table = format_table(summary)
    assert "| search@imagenet-0 | 8 x 128 | warmup 1 / search 2 | 5 |" in table
    assert "EXTRAPOLATED from batches 16, 32" in table
    assert "does not fit at batch 16 on this device" in table
    assert "| **study** |" in table and "**1.5**" in table
    assert "Not in the sums (no forecast): search_k@1." in table
