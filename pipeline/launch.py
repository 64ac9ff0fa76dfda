"""One or N processes: a stage re-runs itself under torchrun when ``dist`` asks for more."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from pcdarts.distributed import init_from_env, is_distributed, world_size
from pcdarts.runtime import resolve_device
from pipeline.config import REPO_ROOT, Params
from pipeline.tracking import check_tracking_server, resolve_tracking_uri


def start_processes(p: Params, module: str, argv: list[str]) -> torch.device:
    """This stage's device, after starting its processes.

    With ``dist.nproc_per_node`` or ``dist.nnodes`` above 1 and not yet under torchrun, runs
    ``torch.distributed.run`` on this same stage and exits with its status (so `dvc repro`
    launches it); under torchrun, joins the process group. First checks that the tracking
    store answers (TrackingUnavailableError otherwise), so a dead server costs no compute.
    Per-process batch = global batch / world size (:func:`per_process_batch`).
    """
    if "LOCAL_RANK" not in os.environ:  # before any data or compute; torchrun's children skip it
        check_tracking_server(resolve_tracking_uri(REPO_ROOT, p.tracking.tracking_uri))
    d = p.dist
    if (d.nproc_per_node > 1 or d.nnodes > 1) and "LOCAL_RANK" not in os.environ:
        command = [sys.executable, "-m", "torch.distributed.run"]
        command += [f"--nproc_per_node={d.nproc_per_node}", f"--nnodes={d.nnodes}"]
        if d.nnodes > 1:
            if not d.rdzv_endpoint:
                raise ValueError("dist.nnodes > 1 needs dist.rdzv_endpoint (host:port)")
            command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={d.rdzv_endpoint}"]
            command += [f"--rdzv_id={d.rdzv_id}"]
        else:
            command += ["--standalone"]
        sys.exit(subprocess.call([*command, "-m", module, *argv]))
    device = init_from_env(p.device)
    device = device if device is not None else resolve_device(p.device)
    configure_runtime(device)
    return device


def per_process_batch(global_batch: int, key: str) -> int:
    world = world_size()
    if global_batch % world:
        raise ValueError(f"{key}={global_batch} is not divisible by the {world} processes")
    return global_batch // world


def finish_processes() -> None:
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# On the CPU the thread count is part of the result: kernels split their sums by thread, so
# one tiny search step gives three different sets of weights on 1, 2 and 3 threads (measured
# 2026-12-02). Every CPU run therefore uses this many threads, on any machine. One: every
# machine has it, and on a shared 2-core machine it was 6-8x faster than two (OpenMP
# spin-waits), which tiny tensors cannot win back.
CPU_THREADS = 1


def configure_runtime(device: torch.device) -> None:
    """Threads and deterministic algorithms for a stage on ``device``.

    CPU: :data:`CPU_THREADS` threads, and ``torch.use_deterministic_algorithms(True)``
    (strict: an op without a deterministic CPU kernel raises rather than varies). CUDA: the
    cores this process may run on (DVC may start stages under a CPU mask), shared among the
    processes torchrun started on this machine; its kernels' algorithms are left as they are.
    """
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
        torch.use_deterministic_algorithms(True)
        return
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, cores // local))
