"""The benchmarks run: a few tiny iterations on the CPU (their numbers are not checked here;
speed is read off the printed table, never asserted by a timed test)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from reporting import memory_k

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


def test_memory_k_runs_each_k_and_batch_and_skips_what_the_machine_cannot_hold(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bench = _load("memory_k")
    tiny = "--C 4 --layers 3 --steps 1 --warmup 0 --probe-batch 2 --budget-gb 2"
    record = tmp_path / "memory_k.json"
    rows = bench.main(
        [
            *tiny.split(),
            "--ks",
            "4",
            "--batches",
            "4,8",
            "--machine-gb",
            "1e-4",
            "--json",
            str(record),
        ]
    )
    (row,) = rows
    assert row["k"] == 4 and row["runs"][4]["step_s"] > 0 and row["runs"][4]["peak_mb"] > 0
    assert row["runs"][8]["does_not_fit"].startswith("not run: predicted")  # above 0.1 MB
    assert row["line_from"] == [2, 4] and row["budget_batch"] % 8 == 0
    assert math.isfinite(row["budget_epoch_min"]) and row["budget_epoch_min"] > 0
    out = capsys.readouterr().out
    assert "largest batch in 2 GB" in out and "Paper: K=4" in out
    # the file the report reads gives the table printed, and says where it was measured
    saved = json.loads(record.read_text())
    table = memory_k.markdown(*memory_k.grid(saved["rows"], saved["setup"]["batches"], 2.0))
    assert table in out and "| 4 |" in table and "not run: predicted" in table
    assert saved["measured"]["machine"] and saved["measured"]["device"] == "cpu"
    assert "C=4, 3 cells" in memory_k.measured_on(saved)


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


@pytest.mark.slow
def test_decisiveness_runs_the_search_twice_from_one_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.config import validate  # noqa: PLC0415 - the pipeline only for this one
    from pipeline.io import write_json  # noqa: PLC0415
    from pipeline.paths import MANIFEST, PREPARED  # noqa: PLC0415
    from pipeline.prepare_data import prepare  # noqa: PLC0415
    from stages.compose import compose_params  # noqa: PLC0415

    write_json(
        tmp_path / MANIFEST, prepare(validate(compose_params()), tmp_path / PREPARED, PREPARED)
    )
    bench = _load("decisiveness")
    tiny = [
        *("search.cifar10.network.C=4", "search.cifar10.network.layers=3"),
        *("search.cifar10.image_size=8", "search.cifar10.batch_size=128"),
        *("search.cifar10.loop.epochs=2", "search.cifar10.loop.warmup_epochs=1"),
        *("--root", str(tmp_path)),
    ]
    result = bench.main(tiny)
    base, twin = result["runs"].values()
    assert [r["epoch"] for r in base] == [r["epoch"] for r in twin] == [0, 1]
    # One ulp apart at the start: the twin's alphas after its arch epoch are not the base's.
    assert base[0]["alphas_normal"] == twin[0]["alphas_normal"]  # warm-up: alphas untouched
    assert base[-1]["alphas_normal"] != twin[-1]["alphas_normal"]
    for cell, (pairs, inputs) in result["agreement"].items():
        n = len(base[-1]["genotype"][cell])
        assert 0 <= pairs <= inputs <= n  # a shared (op, input) pair is a shared input
        if base[-1]["genotype"][cell] == twin[-1]["genotype"][cell]:
            assert pairs == inputs == n
    clear, close = result["kept_by_lead"]["clear"], result["kept_by_lead"]["close"]
    assert clear[1] + close[1] == 2 * 16  # each run's 8 + 8 pairs, split by their lead
    assert 0 <= clear[0] <= clear[1] and 0 <= close[0] <= close[1]
    out = capsys.readouterr().out
    assert "(op, input) pairs" in out and "also derived by the other" in out


def test_decisiveness_counts_shared_pairs_and_inputs_per_node() -> None:
    agreement = _load("decisiveness").agreement
    cell = [["sep_conv_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["sep_conv_5x5", 0]]
    other = [["max_pool_3x3", 1], ["sep_conv_3x3", 0], ["avg_pool_3x3", 2], ["sep_conv_5x5", 1]]
    got = agreement({"normal": cell, "reduce": cell}, {"normal": other, "reduce": cell})
    # node 0: same pairs in another order; node 1: input 2 with another op, 0 against 1.
    assert got == {"normal": (2, 3), "reduce": (4, 4)}


def test_hessian_cost_times_one_evaluation_and_one_iteration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = _load("hessian_cost")
    tiny = "--C 4 --layers 3 --k 2 --batch 4 --image-size 8 --products 3 --repeats 1 --warmup 0"
    row = bench.main(tiny.split())
    assert row["products"] == 3 and row["evaluation_s"] > 0 and row["search_iteration_s"] > 0
    assert math.isfinite(row["eigenvalue"])
    assert "one evaluation of 3 products" in capsys.readouterr().out
