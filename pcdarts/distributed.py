"""Many processes, one result: thin helpers over ``torch.distributed`` (launched by torchrun).

Everything here is a no-op in a single process, so the loops have one code path. Weight
gradients are averaged by ``DistributedDataParallel``; the architecture parameters are
updated outside DDP (their gradient comes from ``torch.autograd.grad`` on another batch), so
their gradients are all-reduced here, which keeps alphas and betas identical on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes outputs, checkpoints and tracking runs."""
    return rank() == 0


def init_from_env(device: str = "auto") -> torch.device | None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); returns the device
    this rank should use (its ``LOCAL_RANK``-th GPU under CUDA), or None when not launched
    by torchrun. NCCL on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` (picklable: a checkpoint, a config) on every rank; ``obj`` itself in
    a single process. Lets every node start from what rank 0 read, on its own disk."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean_(tensors: Sequence[Tensor]) -> None:
    """Average ``tensors`` over the ranks, in place (one flattened collective)."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum plain numbers (running totals and counts) over the ranks."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def max_divergence(params: Sequence[Tensor]) -> float:
    """Largest |p - p on rank 0| over ``params`` and ranks (0.0 when all ranks agree)."""
    if not is_distributed():
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def wrap_ddp(
    model: nn.Module, device: torch.device, exclude: Sequence[nn.Parameter] = ()
) -> nn.Module:
    """``model`` under DistributedDataParallel (itself when not distributed).

    ``exclude`` (the arch parameters) are left out of DDP's gradient buckets: they are
    frozen while DDP runs the weight step and updated by the architect.
    """
    if not is_distributed():
        return model
    flags = [p.requires_grad for p in exclude]
    for p in exclude:  # DDP buckets only the parameters that require grad when it is built
        p.requires_grad_(False)
    try:
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    finally:
        for p, flag in zip(exclude, flags, strict=True):
            p.requires_grad_(flag)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
