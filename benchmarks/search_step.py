"""The search step, fast path against the straightforward oracle, measured side by side.

One iteration = an architecture step on one batch (first order, or the DARTS second-order
unrolled step) and one SGD weight step on another (lr 0.025, momentum 0.9, wd 3e-4, grad
clip 5), on the CIFAR supernet (C=16, 8 cells, 10 classes, 32x32 inputs by default; the
ImageNet supernet, its stem of three stride-2 convs, with ``--dataset imagenet``).
"oracle" is the edge-by-edge forward (``create_model(..., fused=False)``, one MixedOp per edge);
"fast" is the grouped forward of :mod:`pcdarts.fused` (the library's default). Both build
the same model from the same seed; only the forward differs.

Every (K, order, variant) runs in a fresh subprocess so that peak memory does not mix,
and the rounds alternate oracle and fast (which goes first swaps every round), so both see
the same machine state. Reported per cell of the table: the median over rounds of each
worker's median step time (after warm-up steps) and peak memory above the baseline taken
after building the model and data (CPU: VmHWM from /proc/self/status, reset through
/proc/self/clear_refs; CUDA: max_memory_allocated). The ratios compare the two variants
of the same run only.

    python benchmarks/search_step.py                       # K = 1,2,4,8; first and second order
    python benchmarks/search_step.py --ks 4 --orders first --steps 3 --rounds 1
    python benchmarks/search_step.py --dataset imagenet --image-size 64 --ks 2 --orders first
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pcdarts import Architect, ArchitectConfig, Supernet, create_model
from pcdarts.runtime import frozen, resolve_device

# Weight SGD of the benchmark: the CIFAR evaluation values (method §6).
WEIGHT_LR = 0.025
WEIGHT_MOMENTUM = 0.9
WEIGHT_DECAY = 3e-4
WEIGHT_GRAD_CLIP = 5.0
CLASSES = 10  # both supernets get 10 classes: the benchmark measures the cells
VARIANTS = ("oracle", "fast")
MB = 1e6


def weight_step(model: Supernet, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    """One SGD step on the weights; the arch parameters are frozen meanwhile."""
    with frozen(model.arch_parameters()):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(list(model.weight_parameters()), WEIGHT_GRAD_CLIP)
        optimizer.step()
    return loss.detach()


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); harmless where not allowed."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_kb() -> int:
    hwm = _status_kb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(args: argparse.Namespace, variant: str, k: int, order: str) -> dict[str, Any]:
    """Step time and peak memory of one variant, in this process."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = create_model(
        f"pcdarts_supernet_{args.dataset}", C=args.C, layers=args.layers, num_classes=CLASSES,
        k=k, fused=variant == "fast",
    ).to(device)
    assert isinstance(model, Supernet)  # the registry's name says so; mypy cannot
    model.train()
    config = ArchitectConfig(second_order=order == "second")
    architect = Architect(model, nn.functional.cross_entropy, config)
    optimizer = torch.optim.SGD(
        model.weight_parameters(), lr=WEIGHT_LR, momentum=WEIGHT_MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )
    shape = (args.batch, 3, args.image_size, args.image_size)
    x_arch, x_train = torch.randn(shape, device=device), torch.randn(shape, device=device)
    y_arch = torch.randint(0, CLASSES, (args.batch,), device=device)
    y_train = torch.randint(0, CLASSES, (args.batch,), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / MB
    else:
        _reset_peak()
        baseline = (_status_kb("VmRSS") or _peak_kb()) * 1024 / MB
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        architect.step(x_arch, y_arch, x_train, y_train, WEIGHT_LR, optimizer)
        weight_step(model, optimizer, x_train, y_train)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / MB - baseline
    else:
        peak = _peak_kb() * 1024 / MB - baseline
    return {"step_s": statistics.median(times), "peak_mb": peak}


_FORWARDED = (
    "dataset", "device", "C", "layers", "batch", "image_size", "steps", "warmup", "threads",
)


def _run_worker(args: argparse.Namespace, variant: str, k: int, order: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{variant},{k},{order}"]
    for name in _FORWARDED:
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return row


def compare(args: argparse.Namespace, k: int, order: str) -> dict[str, Any]:
    """Both variants at one (K, order), rounds alternating which runs first."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            runs[variant].append(_run_worker(args, variant, k, order))
    row: dict[str, Any] = {"k": k, "order": order}
    for variant, results in runs.items():
        row[f"{variant}_s"] = statistics.median(r["step_s"] for r in results)
        row[f"{variant}_mb"] = statistics.median(r["peak_mb"] for r in results)
    row["speedup"] = row["oracle_s"] / row["fast_s"]
    oracle_mb = row["oracle_mb"]
    row["memory_ratio"] = row["fast_mb"] / oracle_mb if oracle_mb > 0 else float("nan")
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'order':>6} {'K':>2} | {'oracle s':>8} {'fast s':>7} {'speedup':>7} | "
        f"{'oracle MB':>9} {'fast MB':>8} {'fast/oracle':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['order']:>6} {r['k']:>2} | {r['oracle_s']:8.3f} {r['fast_s']:7.3f} "
            f"{r['speedup']:6.2f}x | {r['oracle_mb']:9.0f} {r['fast_mb']:8.0f} "
            f"{r['memory_ratio']:11.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,2,4,8", help="comma-separated K values")
    parser.add_argument("--orders", default="first,second", help="first and/or second")
    parser.add_argument("--dataset", default="cifar10", help="supernet stem: cifar10 or imagenet")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--C", type=int, default=16, help="supernet channels (method §5: 16)")
    parser.add_argument("--layers", type=int, default=8, help="supernet cells (method §5: 8)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per worker")
    parser.add_argument("--rounds", type=int, default=2, help="workers per variant, alternated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        variant, k, order = args.worker.split(",")
        print(json.dumps(measure(args, variant, int(k), order)))
        return []
    device = resolve_device(args.device)
    print(
        f"search step (arch step + weight SGD step), oracle (edge by edge) vs fast (grouped), "
        f"{args.dataset} supernet, {device.type}, {args.threads} threads, batch {args.batch}, "
        f"{args.image_size}x{args.image_size}, C={args.C}, {args.layers} cells; median of "
        f"{args.steps} steps after {args.warmup} warm-up, median over {args.rounds} "
        "alternated rounds"
    )
    rows = []
    for order in args.orders.split(","):
        for k in (int(k) for k in args.ks.split(",")):
            rows.append(compare(args, k, order))
            r = rows[-1]
            print(
                f"  {order} K={k}: oracle {r['oracle_s']:.3f} s, fast {r['fast_s']:.3f} s "
                f"({r['speedup']:.2f}x); peak {r['oracle_mb']:.0f} / {r['fast_mb']:.0f} MB",
                flush=True,
            )
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
