"""Peak memory of a CPU process that can be reset between measurements, and the memory a
machine has to spare: the Linux side of ``pcdarts.profiling``'s memory meter.

The library's CPU meter is the process's resident-set high-water (``ru_maxrss``), which only
grows. Linux keeps the same figure as ``VmHWM`` in ``/proc/self/status`` and resets it to the
current resident set when ``5`` is written to ``/proc/self/clear_refs`` (Linux >= 4.0), so
each batch measured gets its own peak. Elsewhere, or where that is not allowed, it falls back
to the library's meter (measure batches in ascending order then). On CUDA the library's
meter is used as it is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from pcdarts.profiling import MB, MemoryMeter, TorchMemoryMeter, free_memory_mb

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MEMINFO = Path("/proc/meminfo")
RESET_HIGH_WATER = "5"  # clear_refs: reset VmHWM to the current RSS (proc(5))
KIB = 1024


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
    """The CPU process's resident-set high-water (``VmHWM``), reset by :meth:`reset`."""

    resettable: bool = True

    def reset(self) -> None:
        try:
            CLEAR_REFS.write_text(RESET_HIGH_WATER)
        except OSError:
            self.resettable = False

    def peak_mb(self) -> float:
        kib = _kib(STATUS, "VmHWM")
        return (
            kib * KIB / MB if kib is not None else TorchMemoryMeter(torch.device("cpu")).peak_mb()
        )


def memory_meter(device: torch.device) -> MemoryMeter:
    """The meter for ``device``: resettable on a Linux CPU, CUDA's own on a GPU."""
    return (
        ProcMemoryMeter() if device.type == "cpu" and STATUS.is_file() else TorchMemoryMeter(device)
    )


def available_memory_mb(device: torch.device) -> float:
    """What ``device`` has to spare now: CUDA's free memory; on a CPU Linux's
    ``MemAvailable`` (free memory plus the page cache it can drop), else the free pages."""
    if device.type == "cpu":
        with contextlib.suppress(TypeError):
            return float(_kib(MEMINFO, "MemAvailable")) * KIB / MB  # type: ignore[arg-type]
    return free_memory_mb(device)
