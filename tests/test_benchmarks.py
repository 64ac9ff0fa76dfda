"""The benchmarks run: a few tiny iterations on the CPU (their numbers are not checked here;
speed is read off the printed table, never asserted by a timed test)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_search_throughput_runs_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("search_throughput")
    tiny = "--device cpu --C 4 --layers 3 --k 2 --batch 4 --image-size 8 --warmup 1 --steps 1"
    rows = bench.main([*tiny.split(), "--rounds", "1", "--threads", "1"])
    # bf16 autocast and channels-last are CUDA-only in the library: on a CPU only fp32 runs.
    assert list(rows) == ["fp32"]
    for row in rows.values():
        assert row["step_s"] > 0 and math.isnan(row["peak_mb"])  # no CUDA peak on a CPU
    out = capsys.readouterr().out
    assert "x fp32" in out and "CUDA-only" in out


def test_search_step_compares_fast_with_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("search_step")
    tiny = "--C 4 --layers 3 --batch 4 --image-size 8 --warmup 0 --steps 1 --threads 1"
    rows = bench.main([*tiny.split(), "--ks", "2", "--orders", "first,second", "--rounds", "1"])
    assert [(r["order"], r["k"]) for r in rows] == [("first", 2), ("second", 2)]
    for row in rows:
        assert row["oracle_s"] > 0 and row["fast_s"] > 0
        assert row["speedup"] == pytest.approx(row["oracle_s"] / row["fast_s"])
    out = capsys.readouterr().out
    assert "oracle" in out and "speedup" in out


def test_divergence_pairs_start_at_rounding_size(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("divergence")
    tiny = "--C 4 --layers 3 --k 2 --batch 4 --image-size 8 --steps 3 --every 1"
    results = bench.main(tiny.split())
    assert list(results) == ["threads", "fast vs oracle"]
    for rows in results.values():
        assert [step for step, _, _ in rows] == [1, 2, 3]
        # Same seed, same batches: after one step only the order of float sums differs.
        assert 0 <= rows[0][1] < 1e-4 and 0 <= rows[0][2] < 1e-3
    assert "fast vs oracle" in capsys.readouterr().out
