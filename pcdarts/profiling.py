"""What a step of a loop costs, and what the full run will: seconds per step, peak memory,
and the forecast from the steps a config asks for.

Shared by the pipeline's dry run (``pipeline/dry_run.py``), the library-only GPU check
(``scripts/gpu_check.py``) and ``benchmarks/memory_k.py``, so all three measure the same
thing: the loops' own code (:meth:`Searcher.train_one_epoch`, :meth:`Trainer.train_one_epoch`,
:func:`~pcdarts.evaluate.evaluate`) on a few batches of a loader. :func:`step_batches` gives
a loop exactly that many full batches of the loader's data (its images repeated when a split
is smaller than a batch); :class:`TimedBatches` times the gap between successive batches,
which is the loop's step with its next batch's loading. :func:`measure_loop` measures the
per-process batch asked for where it is predicted to fit a memory budget, and otherwise two
smaller batches, extrapolating time and memory linearly in the batch (activations and
per-sample work are linear in it; weights, gradients and optimiser state are not in the
slope). Nothing here prints or writes a file.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from pcdarts.config import SearchConfig, TrainConfig
from pcdarts.engine import evaluation_due
from pcdarts.evaluate import evaluate
from pcdarts.search import Searcher
from pcdarts.train import Trainer

MB = 1e6
GB = 1e9
SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0

# Images in the real datasets, (train, test or val): what a forecast is scaled to where only
# a stand-in is at hand (the embedded data, or synthetic tensors in the GPU check).
CIFAR10_IMAGES = (50_000, 10_000)  # CIFAR-10's train and test sets
IMAGENET_IMAGES = (1_281_167, 50_000)  # ILSVRC2012's train and val sets
COCO_IMAGES = (118_287, 5_000)  # COCO 2017's train2017 and val2017
REAL_IMAGES: dict[str, tuple[int, int]] = {
    "cifar10": CIFAR10_IMAGES,
    "imagenet": IMAGENET_IMAGES,
    "coco": COCO_IMAGES,
}

# The batches measured before the one asked for, as divisors of it: they predict its peak
# memory (a line through two points), and where it does not fit they are the smallest
# points of the extrapolation. Large enough that activations, not the allocator's
# rounding, make up most of their memory.
PROBE_DIVISORS = (16, 8)
# Training-mode BatchNorm needs more than one value per channel: a 1x1 map (the SSD's last
# extra level) at batch 1 has one, so no batch measured is below this.
MIN_BATCH = 2
MEASURED, EXTRAPOLATED, DOES_NOT_FIT = "measured", "extrapolated", "does not fit"

# phase name -> (per-process batch, number of steps) -> seconds of each step
PhaseFn = Callable[[int, int], list[float]]


# --------------------------------------------------------------------------- memory


class MemoryMeter(Protocol):
    """Peak memory of this process on one device since the last :meth:`reset`, in MB."""

    def reset(self) -> None: ...

    def peak_mb(self) -> float: ...


@dataclass
class TorchMemoryMeter:
    """CUDA: ``max_memory_allocated``, reset per measurement. CPU: the process's resident-set
    high-water (``ru_maxrss``), which cannot be reset: measure batches in ascending order in
    a fresh process (the pipeline's meter resets it through /proc where Linux allows)."""

    device: torch.device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # KiB on Linux


def free_memory_mb(device: torch.device) -> float:
    """Memory free on ``device`` now: CUDA's free bytes, or the CPU's free physical pages."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / MB
    # POSIX sysconf: free physical pages, the page cache not counted (an underestimate)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / MB


# What an allocation failure says where it is not a MemoryError or CUDA's own error: the CPU
# allocator's, the OS's (ENOMEM), Python's threading when a thread's stack cannot be mapped.
ALLOCATION_FAILURES = ("out of memory", "can't allocate memory", "cannot allocate memory")
THREAD_FAILURE = "can't start new thread"
# oneDNN reports a failed allocation of a primitive's scratchpad or JIT code only as this;
# counted as an allocation failure under an address-space limit (the dry run's cap), where
# it is what running into the cap looks like (seen in CI, 2026-12-05, in a conv2d).
ONEDNN_FAILURE = "could not create a primitive"


def _address_space_capped() -> bool:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return soft != resource.RLIM_INFINITY


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (CUDA's, the CPU allocator's, the OS's),
    or was raised while handling one (a loader shutting down after it, say)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_allocation_failure(current):
            return True
        # the chain a traceback shows: the cause, else the context unless suppressed
        suppressed = current.__suppress_context__ and current.__cause__ is None
        current = None if suppressed else current.__cause__ or current.__context__
    return False


def _is_allocation_failure(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    if isinstance(error, OSError):
        return error.errno == errno.ENOMEM
    if not isinstance(error, RuntimeError):
        return False
    text = str(error).lower()
    if any(failure in text for failure in ALLOCATION_FAILURES) or THREAD_FAILURE in text:
        return True
    return ONEDNN_FAILURE in text and _address_space_capped()


def release_memory(device: torch.device) -> None:
    """Give back what a failed step held (its tensors die with the exception's frames)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- batches


class RepeatedIndices(Sampler[int]):
    """``total`` indices drawn from ``indices``: seeded permutations of it, one after another."""

    def __init__(self, indices: Sequence[int] | np.ndarray, total: int, seed: int = 0) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.ndim != 1 or len(self.indices) == 0:
            raise ValueError("RepeatedIndices needs a non-empty 1-D index list")
        self.total = total
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed)
        passes = math.ceil(self.total / len(self.indices))
        order = np.concatenate([rng.permutation(self.indices) for _ in range(passes)])
        return iter(order[: self.total].tolist())

    def __len__(self) -> int:
        return self.total


def step_batches(loader: DataLoader[Any], batch_size: int, count: int) -> DataLoader[Any]:
    """``count`` full batches of ``batch_size`` from ``loader``'s data: the indices of its
    sampler (all of its dataset when the sampler has none), repeated where fewer, with its
    workers, collate function, worker seeding and pinning."""
    indices = getattr(loader.sampler, "indices", None)
    if indices is None:
        indices = np.arange(len(loader.dataset))  # type: ignore[arg-type]
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=RepeatedIndices(np.asarray(indices), batch_size * count),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        drop_last=True,
    )


class TimedBatches:
    """The batches of ``loader``, timed: after a pass, ``seconds[i]`` is the wall time from
    the arrival of batch i to that of batch i + 1 (or to the end of the pass): the loop's
    step i with the loading of its next batch. CUDA is synchronised at every arrival.

    Has a DataLoader's ``sampler`` and ``len``, so the loops take it as their loader.
    """

    def __init__(self, loader: DataLoader[Any], device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.seconds: list[float] = []

    @property
    def sampler(self) -> Any:
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        self.seconds = []
        last: float | None = None
        for batch in self.loader:
            now = self._now()
            if last is not None:
                self.seconds.append(now - last)
            last = now
            yield batch
        if last is not None:
            self.seconds.append(self._now() - last)


# --------------------------------------------------------------------------- phases


def search_phases(
    searcher: Searcher, weight_loader: DataLoader[Any], arch_loader: DataLoader[Any]
) -> dict[str, PhaseFn]:
    """The steps of a search (method §5), each timed on the search's own loaders:
    ``warmup`` a weight-only step of the warm-up epochs (absent without warm-up),
    ``search`` an architect step and a weight step, ``eval`` a batch of the arch-split
    evaluation."""
    device = searcher.device

    def train(epoch: int) -> PhaseFn:
        def run(batch: int, steps: int) -> list[float]:
            timed = TimedBatches(step_batches(weight_loader, batch, steps), device)
            searcher.train_one_epoch(epoch, timed, step_batches(arch_loader, batch, steps))  # type: ignore[arg-type]
            return timed.seconds

        return run

    def run_eval(batch: int, steps: int) -> list[float]:
        timed = TimedBatches(step_batches(arch_loader, batch, steps), device)
        c = searcher.config
        evaluate(searcher.model, timed, device, bf16=c.bf16, channels_last=c.channels_last)  # type: ignore[arg-type]
        return timed.seconds

    phases: dict[str, PhaseFn] = {}
    if searcher.config.warmup_epochs > 0:
        phases["warmup"] = train(0)
    phases["search"] = train(searcher.config.warmup_epochs)
    phases["eval"] = run_eval
    return phases


def train_phases(
    trainer: Trainer, train_loader: DataLoader[Any], test_loader: DataLoader[Any]
) -> dict[str, PhaseFn]:
    """The steps of a training (method §6) on its own loaders: ``train`` a step at
    mid-run (drop path at half its final rate), ``eval`` a batch of the test evaluation."""
    device = trainer.device

    def run_train(batch: int, steps: int) -> list[float]:
        timed = TimedBatches(step_batches(train_loader, batch, steps), device)
        trainer.train_one_epoch(trainer.config.epochs // 2, timed)  # type: ignore[arg-type]
        return timed.seconds

    def run_eval(batch: int, steps: int) -> list[float]:
        timed = TimedBatches(step_batches(test_loader, batch, steps), device)
        c = trainer.config
        evaluate(trainer.model, timed, device, bf16=c.bf16, channels_last=c.channels_last)  # type: ignore[arg-type]
        return timed.seconds

    return {"train": run_train, "eval": run_eval}


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Point:
    """One batch measured: median seconds per step of each phase, and the peak memory."""

    batch: int
    seconds: dict[str, float]
    peak_mb: float


@dataclass(frozen=True)
class LoopMeasurement:
    """A loop's cost at the per-process ``batch`` asked for.

    ``status`` is MEASURED (steps ran at ``batch``), EXTRAPOLATED (from the two largest
    ``points``, each smaller than ``batch``; ``seconds`` and ``peak_mb`` are the line's
    values at ``batch``) or DOES_NOT_FIT (nothing measurable fitted; ``seconds`` empty).
    """

    batch: int
    status: str
    seconds: dict[str, float]
    peak_mb: float
    points: tuple[Point, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "status": self.status,
            "seconds_per_step": dict(self.seconds),
            "peak_memory_mb": self.peak_mb,
            "points": [
                {"batch": p.batch, "seconds_per_step": p.seconds, "peak_memory_mb": p.peak_mb}
                for p in self.points
            ],
            "note": self.note,
        }


def _line(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def extrapolate(low: Point, high: Point, batch: int) -> Point:
    """The line through two measured points, at ``batch``: time and memory linear in it.
    A slope below zero (noise) is taken as flat."""
    seconds = {
        phase: max(_line(low.batch, low.seconds[phase], high.batch, s, batch), s)
        for phase, s in high.seconds.items()
    }
    peak = max(_line(low.batch, low.peak_mb, high.batch, high.peak_mb, batch), high.peak_mb)
    return Point(batch, seconds, peak)


class OutOfMemory(Exception):
    """A step ran out of memory at ``batch``; ``peak_mb`` is what it held by then."""

    def __init__(self, batch: int, peak_mb: float) -> None:
        super().__init__(
            f"does not fit at batch {batch} on this device (peak {peak_mb * MB / GB:.1f} GB)"
        )
        self.batch = batch
        self.peak_mb = peak_mb


def measure_point(
    phases: Mapping[str, PhaseFn],
    batch: int,
    *,
    warmup: int,
    steps: int,
    meter: MemoryMeter,
    device: torch.device,
) -> Point:
    """Every phase at ``batch``: ``warmup`` untimed steps then ``steps`` timed (median)."""
    meter.reset()
    seconds: dict[str, float] = {}
    try:
        for name, run in phases.items():
            times = run(batch, warmup + steps)
            if len(times) < warmup + steps:
                raise RuntimeError(f"phase {name} ran {len(times)} of {warmup + steps} steps")
            seconds[name] = statistics.median(times[warmup:])
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        peak = meter.peak_mb()
        del error
        release_memory(device)
        raise OutOfMemory(batch, peak) from None
    return Point(batch, seconds, meter.peak_mb())


def _probes(batch: int) -> list[int]:
    """The probe batches below ``batch``: ``batch`` / 16 and / 8, at least MIN_BATCH (none
    where two distinct ones do not fit below it)."""
    probes = sorted({max(batch // d, MIN_BATCH) for d in PROBE_DIVISORS})
    return probes if len(probes) == len(PROBE_DIVISORS) and probes[-1] < batch else []


def measure_loop(
    phases: Mapping[str, PhaseFn],
    batch: int,
    *,
    warmup: int,
    steps: int,
    budget_mb: float,
    meter: MemoryMeter,
    device: torch.device,
) -> LoopMeasurement:
    """The cost of ``phases`` at the per-process ``batch``.

    Measures the probe batches (``batch`` / 16 and / 8, at least 2) first, in ascending
    order, and the line through them predicts the peak at ``batch``. Where that fits
    ``budget_mb`` (MB), ``batch`` itself is measured; where it does not, or running it
    raises an out-of-memory, the largest of ``batch`` / 2 and / 4 predicted to fit is
    measured and the two largest points measured are extrapolated to ``batch``. An
    out-of-memory there too: DOES_NOT_FIT, saying at which batch and with what peak.
    """
    points: list[Point] = []
    kw: dict[str, Any] = {"warmup": warmup, "steps": steps, "meter": meter, "device": device}
    try:
        for probe in _probes(batch):
            points.append(measure_point(phases, probe, **kw))
    except OutOfMemory as oom:
        return LoopMeasurement(batch, DOES_NOT_FIT, {}, oom.peak_mb, tuple(points), str(oom))
    why = ""
    predicted = extrapolate(points[0], points[1], batch).peak_mb if points else 0.0
    if predicted <= budget_mb:
        try:
            full = measure_point(phases, batch, **kw)
            return LoopMeasurement(batch, MEASURED, full.seconds, full.peak_mb, (*points, full))
        except OutOfMemory as oom:
            why = f"{oom}; "
            if not points:
                return LoopMeasurement(batch, DOES_NOT_FIT, {}, oom.peak_mb, (), str(oom))
    else:
        why = (
            f"predicted {predicted * MB / GB:.1f} GB at batch {batch} > budget "
            f"{budget_mb * MB / GB:.1f} GB; "
        )
    low, high = points
    for larger in (batch // 2, batch // 4):  # the larger first
        if larger > high.batch and extrapolate(low, high, larger).peak_mb <= budget_mb:
            try:
                low, high = high, measure_point(phases, larger, **kw)
                points.append(high)
            except OutOfMemory:
                pass  # the probes remain: extrapolate from them
            break
    line = extrapolate(low, high, batch)
    note = f"{why}extrapolated from batches {low.batch} and {high.batch}"
    return LoopMeasurement(batch, EXTRAPOLATED, line.seconds, line.peak_mb, tuple(points), note)


# --------------------------------------------------------------------------- forecast


def steps_per_epoch(samples: int, batch: int, world: int = 1) -> int:
    """Steps of one process per epoch: its share of ``samples`` (padded to the same count on
    every rank, as the loaders' samplers do) in batches of ``batch``, the last one partial."""
    return math.ceil(math.ceil(samples / world) / batch)


def evaluations(epochs: int, eval_every: int) -> int:
    """How many epochs end with an evaluation (the loops' cadence)."""
    return sum(evaluation_due(e, epochs, eval_every) for e in range(epochs))


def search_schedule(
    config: SearchConfig, weight_samples: int, arch_samples: int, batch: int, world: int = 1
) -> dict[str, int]:
    """Steps of each :func:`search_phases` phase over a whole search, per process."""
    per_epoch = steps_per_epoch(weight_samples, batch, world)
    steps = {
        "search": (config.epochs - config.warmup_epochs) * per_epoch,
        "eval": evaluations(config.epochs, config.eval_every)
        * steps_per_epoch(arch_samples, batch, world),
    }
    if config.warmup_epochs > 0:
        steps["warmup"] = config.warmup_epochs * per_epoch
    return steps


def train_schedule(
    config: TrainConfig, train_samples: int, test_samples: int, batch: int, world: int = 1
) -> dict[str, int]:
    """Steps of each :func:`train_phases` phase over a whole training, per process."""
    return {
        "train": config.epochs * steps_per_epoch(train_samples, batch, world),
        "eval": evaluations(config.epochs, config.eval_every)
        * steps_per_epoch(test_samples, batch, world),
    }


@dataclass(frozen=True)
class Forecast:
    """The full run on ``world`` processes like the one measured: each process takes its
    steps at the measured rate, so the wall time is one process's (perfect scaling: the
    gradient all-reduce and shared input pipelines are not in the measurement)."""

    wall_seconds: float
    world: int
    steps: dict[str, int] = field(default_factory=dict)

    @property
    def wall_hours(self) -> float:
        return self.wall_seconds / SECONDS_PER_HOUR

    @property
    def device_days(self) -> float:
        return self.wall_seconds * self.world / SECONDS_PER_DAY

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_hours": self.wall_hours,
            "device_days": self.device_days,
            "world": self.world,
            "steps": dict(self.steps),
        }


def forecast(seconds: Mapping[str, float], steps: Mapping[str, int], world: int) -> Forecast:
    """Seconds per step of each phase times its steps; every phase in ``steps`` must have
    been measured."""
    missing = set(steps) - set(seconds)
    if missing:
        raise ValueError(f"no measurement of phase(s) {sorted(missing)}")
    wall = sum(seconds[phase] * n for phase, n in steps.items())
    return Forecast(wall, world, dict(steps))


def scaling_assumption(world: int) -> str:
    """What a forecast for ``world`` processes assumes, in words."""
    if world == 1:
        return "one process, as measured"
    return (
        f"{world} processes, each stepping as fast as the one measured at its per-process "
        "batch (perfect scaling: gradient all-reduce and input contention not measured)"
    )
