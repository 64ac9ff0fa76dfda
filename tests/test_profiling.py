"""Measuring steps and forecasting runs (pcdarts/profiling.py): timed batches, the batch
ladder (measured, extrapolated, does not fit), steps per epoch and the forecast."""

from __future__ import annotations

import errno
import math
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import ArchitectConfig, create_model, get_genotype
from pcdarts.data.loaders import make_loader
from pcdarts.profiling import (
    DOES_NOT_FIT,
    EXTRAPOLATED,
    MEASURED,
    Point,
    TimedBatches,
    TorchMemoryMeter,
    evaluations,
    extrapolate,
    forecast,
    is_out_of_memory,
    measure_loop,
    search_phases,
    search_schedule,
    step_batches,
    steps_per_epoch,
    train_phases,
    train_schedule,
)
from pcdarts.search import SearchConfig, Searcher
from pcdarts.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]

CPU = torch.device("cpu")


def _data(n: int, size: int = 8, classes: int = 4) -> TensorDataset:
    g = torch.Generator().manual_seed(n)
    return TensorDataset(
        torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,))
    )


def test_step_batches_are_full_and_drawn_from_the_loaders_indices() -> None:
    data = TensorDataset(torch.arange(40).float(), torch.arange(40))
    loader = make_loader(data, torch.arange(10, 15).numpy(), 2, shuffle=True, seed=0)
    batches = list(step_batches(loader, 4, 3))  # 12 samples from a split of 5: repeated
    assert [len(x) for x, _ in batches] == [4, 4, 4]
    seen = torch.cat([y for _, y in batches])
    assert set(seen.tolist()) == set(range(10, 15))
    plain = DataLoader(data, batch_size=5)  # no index list: the whole dataset
    assert len(list(step_batches(plain, 8, 5))) == 5


def test_timed_batches_time_every_step_of_a_pass() -> None:
    timed = TimedBatches(DataLoader(_data(12), batch_size=4), CPU)
    assert len(timed) == 3 and timed.sampler is timed.loader.sampler
    for _ in timed:
        torch.ones(200, 200) @ torch.ones(200, 200)
    assert len(timed.seconds) == 3 and all(s > 0 for s in timed.seconds)


def test_search_and_train_phases_run_the_loops_own_steps() -> None:
    model = create_model("pcdarts_supernet_cifar10", C=4, layers=3, num_classes=4, k=2)
    config = SearchConfig(epochs=4, warmup_epochs=1, architect=ArchitectConfig(lr=1e-2))
    searcher = Searcher(model, config, CPU, show_progress=False)
    loader = DataLoader(_data(6), batch_size=2)
    alphas = model.alphas_normal.detach().clone()
    phases = search_phases(searcher, loader, loader)
    assert list(phases) == ["warmup", "search", "eval"]
    assert len(phases["warmup"](3, 2)) == 2 and torch.equal(model.alphas_normal, alphas)
    assert len(phases["search"](3, 2)) == 2 and not torch.equal(model.alphas_normal, alphas)
    assert len(phases["eval"](3, 4)) == 4
    no_warmup = Searcher(model, replace(config, warmup_epochs=0), CPU, show_progress=False)
    assert list(search_phases(no_warmup, loader, loader)) == ["search", "eval"]

    network = create_model(
        "pcdarts_cifar10", genotype=get_genotype("pc_darts_cifar"), C=4, layers=3, num_classes=4
    )
    trainer = Trainer(network, TrainConfig(epochs=2), CPU, show_progress=False)
    phases = train_phases(trainer, loader, loader)
    assert [len(phases[p](2, 3)) for p in ("train", "eval")] == [3, 3]


class FakeMeter:
    """Memory as the phases report it: reset clears, peak is the largest seen since."""

    def __init__(self) -> None:
        self.now = 0.0

    def reset(self) -> None:
        self.now = 0.0

    def peak_mb(self) -> float:
        return self.now


def _fake_phases(meter: FakeMeter, oom_above: int | None = None) -> dict:
    """A step of batch b takes 0.1 + 0.01 b s and 100 + 10 b MB; above ``oom_above`` it
    raises the CPU allocator's out-of-memory."""

    def run(batch: int, steps: int) -> list[float]:
        meter.now = max(meter.now, 100.0 + 10.0 * batch)
        if oom_above is not None and batch > oom_above:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
        return [0.1 + 0.01 * batch] * steps

    return {"train": run}


def _measure(batch: int, budget_mb: float, oom_above: int | None = None) -> object:
    meter = FakeMeter()
    return measure_loop(
        _fake_phases(meter, oom_above),
        batch,
        warmup=1,
        steps=2,
        budget_mb=budget_mb,
        meter=meter,
        device=CPU,
    )


def test_a_batch_predicted_to_fit_is_measured() -> None:
    m = _measure(256, budget_mb=10_000)
    assert m.status == MEASURED and [p.batch for p in m.points] == [16, 32, 256]
    assert m.seconds["train"] == pytest.approx(0.1 + 2.56) and m.peak_mb == 100 + 2560


def test_a_batch_predicted_not_to_fit_is_extrapolated_from_two_smaller() -> None:
    # 1,500 MB: batch 128 (1,380 MB) fits, 256 (2,660 MB) does not
    m = _measure(256, budget_mb=1500)
    assert m.status == EXTRAPOLATED and [p.batch for p in m.points] == [16, 32, 128]
    assert m.seconds["train"] == pytest.approx(2.66) and m.peak_mb == pytest.approx(2660)
    assert "predicted 2.7 GB at batch 256 > budget 1.5 GB" in m.note
    assert "extrapolated from batches 32 and 128" in m.note


def test_an_out_of_memory_falls_back_to_smaller_batches_then_says_it_does_not_fit() -> None:
    m = _measure(256, budget_mb=10_000, oom_above=64)  # the prediction was wrong
    assert m.status == EXTRAPOLATED and m.note.startswith("does not fit at batch 256")
    assert m.peak_mb == pytest.approx(2660)  # from 16 and 32: batch 128 ran out too
    m = _measure(256, budget_mb=10_000, oom_above=8)
    assert m.status == DOES_NOT_FIT and not m.seconds
    assert m.note == "does not fit at batch 16 on this device (peak 0.3 GB)"
    small = _measure(4, budget_mb=10_000, oom_above=2)  # too small for probes
    assert small.status == DOES_NOT_FIT and small.points == ()


def test_extrapolation_is_the_line_and_never_below_the_larger_point() -> None:
    low, high = Point(8, {"a": 1.0}, 500.0), Point(16, {"a": 2.0}, 900.0)
    assert extrapolate(low, high, 64).seconds["a"] == pytest.approx(8.0)
    assert extrapolate(low, high, 64).peak_mb == pytest.approx(3300.0)
    noisy = Point(16, {"a": 0.9}, 400.0)  # slower and larger at the smaller batch
    assert extrapolate(low, noisy, 64) == Point(64, {"a": 0.9}, 400.0)


def test_out_of_memory_errors_are_recognised() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried ..."))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
    assert is_out_of_memory(OSError(errno.ENOMEM, "Cannot allocate memory"))
    assert not is_out_of_memory(OSError(errno.ENOENT, "No such file or directory"))
    assert is_out_of_memory(RuntimeError("can't start new thread"))


def test_a_failure_while_handling_an_out_of_memory_counts_as_one() -> None:
    try:
        try:
            raise MemoryError
        except MemoryError:
            raise RuntimeError("DataLoader worker exited unexpectedly") from None
    except RuntimeError as error:
        assert not is_out_of_memory(error)  # `from None` hides its context on purpose...
    try:
        try:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        except RuntimeError:
            raise RuntimeError("DataLoader worker exited unexpectedly")  # noqa: B904
    except RuntimeError as error:
        assert is_out_of_memory(error)  # ...a failure while shutting down does not


def test_onednn_primitive_failures_count_only_under_an_address_space_cap() -> None:
    error = RuntimeError("could not create a primitive")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    assert is_out_of_memory(error) == (soft != resource.RLIM_INFINITY)
    code = (
        "import resource; from pcdarts.profiling import is_out_of_memory; "
        "hard = resource.getrlimit(resource.RLIMIT_AS)[1]; "
        "cap = 1 << 45 if hard == resource.RLIM_INFINITY else hard; "
        "resource.setrlimit(resource.RLIMIT_AS, (cap, hard)); "
        "print(is_out_of_memory(RuntimeError('could not create a primitive')))"
    )
    capped = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert capped.stdout.strip() == "True"


def test_steps_per_epoch_follow_the_sharded_sampler() -> None:
    assert steps_per_epoch(25_000, 256) == 98  # the CIFAR-10 search's weight half
    assert steps_per_epoch(25_000, 32, world=8) == 98  # 3,125 per rank
    assert steps_per_epoch(10, 4, world=3) == 1  # 4 per rank after padding
    assert evaluations(50, 1) == 50 and evaluations(10, 4) == 3  # epochs 3, 7 and the last


def test_forecast_of_a_search_counts_warmup_search_and_evaluation_steps() -> None:
    config = SearchConfig()  # the paper's CIFAR-10 search: 50 epochs, 15 of warm-up
    steps = search_schedule(config, 25_000, 25_000, 256)
    assert steps == {"warmup": 15 * 98, "search": 35 * 98, "eval": 50 * 98}
    f = forecast({"warmup": 1.0, "search": 2.0, "eval": 0.5}, steps, world=1)
    assert f.wall_seconds == pytest.approx(98 * (15 + 70 + 25))
    assert f.device_days == pytest.approx(f.wall_seconds / 86400)
    eight = forecast(
        {"train": 3.0, "eval": 1.0}, train_schedule(TrainConfig(), 50_000, 10_000, 12, 8), 8
    )
    assert eight.steps == {"train": 600 * 521, "eval": 600 * 105}
    assert eight.device_days == pytest.approx(8 * eight.wall_seconds / 86400)
    with pytest.raises(ValueError, match="no measurement of phase"):
        forecast({"search": 1.0}, steps, world=1)
    assert math.isfinite(f.wall_hours)


def test_the_cpu_meter_reads_the_process_high_water() -> None:
    meter = TorchMemoryMeter(CPU)
    meter.reset()
    assert meter.peak_mb() > 10  # this process holds torch
