"""The prepared GPU check (scripts/gpu_check.py) runs its library-only parts on the CPU at toy
sizes, prints one JSON, and loads nothing beyond PyTorch, its own dependencies and pcdarts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the GPU machine will not have: the pipeline's SDKs and the repository's other layers.
NOT_NEEDED = {"dvc", "mlflow", "hydra", "omegaconf", "sklearn", "matplotlib", "pipeline",
              "detection", "stages", "reporting"}  # fmt: skip
LOOPS = ["search@cifar10", "search@imagenet", "train_cifar10", "train_imagenet"]


def test_gpu_check_quick_on_the_cpu_prints_one_json_from_the_library_alone() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--device", "cpu", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert report["device"] == "cpu" and report["quick"] is True
    assert report["tests"]["returncode"] == 0 and "skipped" in report["tests"]["summary"]
    assert list(report["throughput"]["rows"]) == ["fp32"]  # bf16 and channels-last: CUDA only
    assert list(report["forecast"]) == LOOPS
    for name, row in report["forecast"].items():
        assert row["measurement"]["status"] == "measured", name
        assert math.isfinite(row["forecast"]["wall_hours"]) and row["forecast"]["wall_hours"] > 0
        world = 8 if "imagenet" in name else 1
        assert row["world"] == world
        f = row["forecast"]
        assert f["device_days"] * 24 == pytest.approx(f["wall_hours"] * world)
    loaded = set(report["packages"])
    assert "pcdarts" in loaded and "torch" in loaded
    assert not loaded & NOT_NEEDED and not any(p.startswith("mm") for p in loaded), loaded
