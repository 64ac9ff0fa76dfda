"""What every loop shares: devices, RNG state, guards, cost accounting, progress bars."""

from __future__ import annotations

import contextlib
import random
import resource
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pcdarts.distributed import world_size
from pcdarts.errors import UserError

T = TypeVar("T")
SECONDS_PER_DAY = 86400.0
MB = 1e6


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the run stops and the last good checkpoint stays."""


def check_finite(loss: Tensor, epoch: int, step: int, what: str) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"{what} loss is {loss.item()} at epoch {epoch}, step {step}; stopping. The last "
            "checkpoint holds the last good state: lower the learning rate or enable gradient "
            "clipping, then resume from it."
        )


def seed_everything(seed: int) -> None:
    """The one seeding function: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    # The global NumPy RNG on purpose: third-party transforms draw from it.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG the loops draw from, for checkpoints."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> this process's CUDA device when there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {name!r} asked for, but CUDA is not available; use 'cpu' or 'auto'"
        )
    return device


class DeviceUnavailableError(UserError, RuntimeError):
    """The configured device does not exist on this machine."""


@dataclass(frozen=True)
class Cost:
    """Compute spent: wall seconds x devices. On CUDA that is GPU-days (the paper's unit)."""

    wall_seconds: float
    device_type: str
    device_count: int
    device_name: str
    peak_memory_mb: float = float("nan")  # CUDA: peak allocated; CPU: peak RSS of the process

    @property
    def device_days(self) -> float:
        return self.wall_seconds * self.device_count / SECONDS_PER_DAY

    def metrics(self) -> dict[str, float]:
        key = "cost/gpu_days" if self.device_type == "cuda" else "cost/device_days"
        return {
            key: self.device_days,
            "cost/wall_seconds": self.wall_seconds,
            "cost/peak_memory_mb": self.peak_memory_mb,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": self.wall_seconds,
            "device_type": self.device_type,
            "device_count": self.device_count,
            "device_name": self.device_name,
            "device_days": self.device_days,
            "peak_memory_mb": self.peak_memory_mb,
            "unit": "GPU-days" if self.device_type == "cuda" else f"{self.device_type}-days",
        }


class Stopwatch:
    """Wall time across resumes: starts from the seconds a checkpoint already counted."""

    def __init__(self, device: torch.device, already: float = 0.0) -> None:
        self.device = device
        self.already = already
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.already + time.perf_counter() - self.start

    def cost(self) -> Cost:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MB
        else:
            name = "cpu"
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # KiB on Linux
        return Cost(self.seconds, self.device.type, world_size(), name, peak)


@contextlib.contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Temporarily stop gradients to ``params`` (e.g. alphas during a weight step)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def progress(iterable: Iterable[T], desc: str, total: int | None, enabled: bool) -> Any:
    """A tqdm bar that stays quiet when stderr is not a terminal (tqdm's ``disable=None``)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=None if enabled else True,
        leave=False,
        dynamic_ncols=True,
    )


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when asked; a no-op elsewhere (one code path)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def memory_format(device: torch.device, channels_last: bool) -> torch.memory_format:
    """Channels-last on CUDA when asked; the contiguous format elsewhere (one code path).

    Not on the CPU: there PyTorch 2.14.1's convolution backward on a channel slice of a
    channels-last tensor (MixedOp's partial channels are such slices) corrupts the heap
    ("corrupted double-linked list", or a hang), and channels-last buys nothing on it.
    """
    on_gpu = channels_last and device.type == "cuda"
    return torch.channels_last if on_gpu else torch.contiguous_format


def to_device(batch: Sequence[Tensor], device: torch.device, channels_last: bool) -> list[Tensor]:
    """``batch`` on ``device``, images (the first tensor, (N, C, H, W)) in the memory format
    of :func:`memory_format`."""
    out = [t.to(device, non_blocking=True) for t in batch]
    if out[0].dim() == 4:
        out[0] = out[0].contiguous(memory_format=memory_format(device, channels_last))
    return out
