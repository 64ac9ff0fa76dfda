"""The paper's memory claim, measured: one search step of the CIFAR-10 supernet at the
paper's sizes for partial-channel K in {1, 2, 4, 8}, at batch 64 and 256, side by side.

The claim (method §2, §5): processing 1/K of each edge's channels cuts the supernet's memory
to about 1/K, so one card takes a K times larger batch and the search runs about K times
faster; DARTS (K=1) searches at batch 64, PC-DARTS (K=4) at batch 256, on one 11 GB GTX
1080Ti. A step here is the search loop's own (``pcdarts.profiling.search_phases``: a
first-order architect step, then an SGD step of the weights; C=16, 8 cells, 32x32, 10
classes, synthetic images), the median of ``--steps`` after ``--warmup``.

Each (K, batch) runs in a fresh process, so every peak is its own (CPU: the resident-set
high-water, reset before the steps; CUDA: max allocated). Per K, batch 32 and 64 run first;
the line through them predicts batch 256, which runs only where that fits ``--machine-gb``
(default: 80 % of the memory free now), else it is reported as not fitting this machine.
The line through the two largest batches run gives the memory per image (the slope: what
partial channels cut) and, for ``--budget-gb`` (default 11: the paper's card), the largest
batch that fits and the epoch time there (the 25,000-image weight split of CIFAR-10).

    python benchmarks/memory_k.py                        # CPU, one thread, a few minutes
    python benchmarks/memory_k.py --device cuda --threads 4
    python benchmarks/memory_k.py --ks 4,8 --batches 64 --steps 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import SearchConfig, Supernet, create_model
from pcdarts.config import CIFAR_ARCH_FRACTION, CIFAR_IMAGE_SIZE, SUPERNET_SHAPE
from pcdarts.profiling import (
    CIFAR10_IMAGES,
    GB,
    MB,
    OutOfMemory,
    Point,
    extrapolate,
    measure_point,
    search_phases,
    steps_per_epoch,
)
from pcdarts.runtime import resolve_device
from pcdarts.search import Searcher
from pipeline.io import write_json
from pipeline.memory import available_memory_mb, memory_meter
from reporting import memory_k
from reporting.memory_k import MB_PER_GB, MEMORY_K_FILE

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10  # CIFAR-10
PROBE_BATCH = 32  # run before the smallest batch asked for: the line's first point
PAPER_CARD_GB = 11.0  # the paper's GTX 1080Ti
MACHINE_FRACTION = 0.8  # of the memory free now: a batch predicted above it is not run
BATCH_MULTIPLE = 8  # the largest batch within the budget, rounded down to a multiple of this
WEIGHT_SPLIT = math.floor((1 - CIFAR_ARCH_FRACTION) * CIFAR10_IMAGES[0])  # 25,000 images
SECONDS_PER_MINUTE = 60.0


def measure(args: argparse.Namespace, k: int, batch: int) -> dict[str, Any]:
    """The search step at (K, batch), in this process."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = create_model(
        "pcdarts_supernet_cifar10", C=args.C, layers=args.layers, num_classes=CLASSES, k=k
    )
    assert isinstance(model, Supernet)  # the registry's name says so; mypy cannot
    searcher = Searcher(model, SearchConfig(), device, show_progress=False)
    n = 2 * batch
    data = TensorDataset(
        torch.randn(n, 3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE), torch.randint(0, CLASSES, (n,))
    )
    loader = DataLoader(data, batch_size=batch)
    phases = {"search": search_phases(searcher, loader, loader)["search"]}
    # CPU: the resident-set high-water, reset through /proc (no loader workers here)
    meter = memory_meter(device, with_workers=False)
    try:
        point = measure_point(
            phases, batch, warmup=args.warmup, steps=args.steps, meter=meter, device=device
        )
    except OutOfMemory as oom:
        return {"k": k, "batch": batch, "does_not_fit": str(oom), "peak_mb": oom.peak_mb}
    return {"k": k, "batch": batch, "step_s": point.seconds["search"], "peak_mb": point.peak_mb}


def _machine_mb(args: argparse.Namespace) -> float:
    if args.machine_gb is not None:
        return float(args.machine_gb * GB / MB)
    return MACHINE_FRACTION * available_memory_mb(resolve_device(args.device))


def _worker(args: argparse.Namespace, k: int, batch: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{k},{batch}"]
    for name in ("device", "steps", "warmup", "threads", "C", "layers"):
        cmd += [f"--{name}", str(getattr(args, name))]
    # this checkout's code in the worker, whatever the environment installed
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:  # killed by the OS, most likely for memory
        return {"k": k, "batch": batch, "does_not_fit": f"worker exit {result.returncode}"}
    row: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return row


def _machine(device: torch.device) -> str:
    """The CPU's model, cores and memory, or the GPU's name: what the table was measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        model = fields.get("model name", model)
        if "cpu family" in fields:  # "AMD EPYC" alone does not say which generation
            model += f" (family {fields['cpu family']} model {fields.get('model', '?')})"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return f"{model}, {os.cpu_count()} cores, {total:.0f} GB"


def _measured(args: argparse.Namespace, device: torch.device, wall_s: float) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    cuda = device.type == "cuda"
    return {
        "date": date.today().isoformat(),
        "commit": commit or "unknown",
        "machine": _machine(device),
        "device": device.type,
        "threads": args.threads,
        "command": " ".join(["python benchmarks/memory_k.py", *sys.argv[1:]]),
        "wall_s": wall_s,
        "peak": "CUDA max allocated"
        if cuda
        else "the process's resident-set high-water (torch and the model included)",
    }


def _point(row: dict[str, Any]) -> Point:
    return Point(row["batch"], {"search": row["step_s"]}, row["peak_mb"])


def compare_k(args: argparse.Namespace, k: int, machine_mb: float) -> dict[str, Any]:
    """One K: the probe and the batches asked for, ascending; the line; the budget batch."""
    asked = sorted(int(b) for b in args.batches.split(","))
    runs: dict[int, dict[str, Any]] = {}
    for batch in sorted({args.probe_batch, *asked}):
        done = [_point(r) for r in runs.values() if "step_s" in r]
        if len(done) >= 2:
            predicted = extrapolate(done[-2], done[-1], batch).peak_mb
            if predicted > machine_mb:
                runs[batch] = {
                    "k": k,
                    "batch": batch,
                    "does_not_fit": f"not run: predicted {predicted / MB_PER_GB:.1f} GB > this "
                    f"machine's {machine_mb / MB_PER_GB:.1f} GB",
                    "predicted_mb": predicted,
                }
                continue
        runs[batch] = _worker(args, k, batch)
        print(f"  K={k} batch {batch}: {memory_k.cell(runs[batch])}", file=sys.stderr, flush=True)
    done = [_point(r) for r in runs.values() if "step_s" in r]
    row: dict[str, Any] = {"k": k, "runs": {b: runs[b] for b in asked}}
    if len(done) >= 2:
        low, high = done[-2], done[-1]
        slope = (high.peak_mb - low.peak_mb) / (high.batch - low.batch)
        budget = args.budget_gb * GB / MB
        fits = (budget - high.peak_mb) / slope + high.batch if slope > 0 else float("inf")
        largest = int(fits // BATCH_MULTIPLE * BATCH_MULTIPLE)
        at = extrapolate(low, high, largest) if largest > high.batch else None
        if at is None:  # inside the measured range: the line between the points
            t = low.seconds["search"] + (high.seconds["search"] - low.seconds["search"]) * (
                (largest - low.batch) / (high.batch - low.batch)
            )
            at = Point(largest, {"search": t}, budget)
        row.update(
            {
                "mb_per_image": slope,
                "line_from": [low.batch, high.batch],
                "budget_batch": largest,
                "budget_step_s": at.seconds["search"],
                "budget_epoch_min": steps_per_epoch(WEIGHT_SPLIT, largest)
                * at.seconds["search"]
                / SECONDS_PER_MINUTE,
            }
        )
    return row


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, as the stages")
    parser.add_argument("--C", type=int, default=SUPERNET_SHAPE.C, help="method §5: 16")
    parser.add_argument("--layers", type=int, default=SUPERNET_SHAPE.layers, help="§5: 8")
    parser.add_argument("--probe-batch", type=int, default=PROBE_BATCH)
    parser.add_argument("--budget-gb", type=float, default=PAPER_CARD_GB)
    parser.add_argument("--machine-gb", type=float, default=None)
    parser.add_argument(
        "--json", type=Path, default=None, help=f"also write the table here ({MEMORY_K_FILE})"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        k, batch = (int(v) for v in args.worker.split(","))
        print(json.dumps(measure(args, k, batch)))
        return []
    start = time.monotonic()
    machine_mb = _machine_mb(args)
    device = resolve_device(args.device)
    print(
        f"search step (first-order arch step + weight SGD step) of the CIFAR-10 supernet, "
        f"C={args.C}, {args.layers} cells, 32x32, on {device.type} "
        f"({args.threads} threads); median of {args.steps} steps after {args.warmup}; each "
        f"(K, batch) in a fresh process; batches predicted above {machine_mb / MB_PER_GB:.1f} GB "
        "are not run"
    )
    rows = [compare_k(args, int(k), machine_mb) for k in args.ks.split(",")]
    batches = sorted(int(b) for b in args.batches.split(","))
    print(memory_k.markdown(*memory_k.grid(rows, batches, args.budget_gb)))
    print(memory_k.PAPER)
    if args.json is not None:
        record = {
            "measured": _measured(args, device, time.monotonic() - start),
            "setup": {
                "C": args.C,
                "layers": args.layers,
                "steps": args.steps,
                "warmup": args.warmup,
                "budget_gb": args.budget_gb,
                "batches": batches,
            },
            "rows": rows,
        }
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
