"""Peak memory of a CPU process that can be reset between measurements, and the memory a
machine has to spare: the Linux side of ``pcdarts.profiling``'s memory meter.

The library's CPU meter is the process's resident-set high-water (``ru_maxrss``), which only
grows. Linux keeps the same figure as ``VmHWM`` in ``/proc/self/status`` and resets it to the
current resident set when ``5`` is written to ``/proc/self/clear_refs`` (Linux >= 4.0), so
each batch measured gets its own peak. Elsewhere, or where that is not allowed, it falls back
to the library's meter (measure batches in ascending order then). On CUDA the library's
meter is used as it is.

A stage's memory is more than its process's: its data-loader workers are forked from it,
and every page the main process writes after the fork is copied (measured 2026-12-05: the
paper's ImageNet search with 8 workers took about twice its main process's 10.8 GB, and the
kernel's out-of-memory killer stopped it). So the meter also samples how much memory the
machine has left (``MemAvailable``, every 20 ms) and reports the larger of the high-water
and the process's resident set at the reset plus the largest drop since: what the stage
took from the machine, workers included (and whatever else started meanwhile: on the safe
side). :func:`cap_address_space` then turns an allocation beyond the budget into an
out-of-memory error the dry run reports, instead of the kernel killing a process.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pcdarts.profiling import MB, MemoryMeter, TorchMemoryMeter, free_memory_mb

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MEMINFO = Path("/proc/meminfo")
RESET_HIGH_WATER = "5"  # clear_refs: reset VmHWM to the current RSS (proc(5))
KIB = 1024
SAMPLE_SECONDS = 0.02  # how often the machine's available memory is read


def _kib(path: Path, field: str) -> int | None:
    """``field:  <n> kB`` of a /proc file, in KiB; None where absent or unreadable."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class ProcMemoryMeter:
    """What a CPU process and its data-loader workers take, since :meth:`reset`: the larger of
    the process's resident-set high-water (``VmHWM``) and its resident set at the reset plus
    the largest drop of the machine's available memory since (sampled)."""

    resettable: bool = True
    with_workers: bool = True  # False: the process's high-water alone (no loader workers)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _start_rss_mb: float = 0.0
    _start_available_mb: float = 0.0
    _least_available_mb: float = float("inf")
    _sampler: threading.Thread | None = None

    def reset(self) -> None:
        try:
            CLEAR_REFS.write_text(RESET_HIGH_WATER)
        except OSError:
            self.resettable = False
        available = _mb(MEMINFO, "MemAvailable")
        with self._lock:
            self._start_rss_mb = _mb(STATUS, "VmRSS")
            self._start_available_mb = self._least_available_mb = available
        if self._sampler is None and self.with_workers:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        while True:
            available = _mb(MEMINFO, "MemAvailable")
            with self._lock:
                self._least_available_mb = min(self._least_available_mb, available)
            time.sleep(SAMPLE_SECONDS)

    def peak_mb(self) -> float:
        high_water = _mb(STATUS, "VmHWM")
        if high_water != high_water:  # NaN: no /proc
            return TorchMemoryMeter(torch.device("cpu")).peak_mb()
        if not self.with_workers:
            return high_water
        with self._lock:
            taken = self._start_rss_mb + self._start_available_mb - self._least_available_mb
        return max(high_water, taken) if taken == taken else high_water


def _mb(path: Path, key: str) -> float:
    kib = _kib(path, key)
    return float("nan") if kib is None else kib * KIB / MB


def cap_address_space(budget_mb: float) -> None:
    """Let this process (and the workers it forks, each) map at most ``budget_mb`` more than
    it maps now: an allocation past it fails with an error the dry run catches as an
    out-of-memory, before the machine runs out. CPU only (CUDA maps vast address ranges)."""
    size = _kib(STATUS, "VmSize")
    if size is None:
        return
    limit = int(size * KIB + budget_mb * MB)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or limit < hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def memory_meter(device: torch.device, with_workers: bool = True) -> MemoryMeter:
    """The meter for ``device``: resettable on a Linux CPU (``with_workers``: what the stage
    took from the machine, its loader workers included), CUDA's own on a GPU."""
    if device.type == "cpu" and STATUS.is_file():
        return ProcMemoryMeter(with_workers=with_workers)
    return TorchMemoryMeter(device)


def available_memory_mb(device: torch.device) -> float:
    """What ``device`` has to spare now: CUDA's free memory; on a CPU Linux's
    ``MemAvailable`` (free memory plus the page cache it can drop), else the free pages."""
    if device.type == "cpu":
        with contextlib.suppress(TypeError):
            return float(_kib(MEMINFO, "MemAvailable")) * KIB / MB  # type: ignore[arg-type]
    return free_memory_mb(device)
