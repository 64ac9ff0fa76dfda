"""Cost of one PC-DARTS search iteration against K, next to the reference's (SPEC §7).

One iteration = a first-order architecture step on one batch (``pcdarts.Architect``)
and one SGD weight step on another (lr 0.025, momentum 0.9, wd 3e-4, grad clip 5),
on the CIFAR supernet (C=16, 8 cells, 10 classes, 32x32 inputs) on the CPU.

Each K runs in a fresh subprocess so that peak-memory readings do not mix. Reported
per K: the median wall time of ``--steps`` iterations after two warm-up iterations; the
peak resident memory above the baseline taken after building the model and the data
(VmHWM from /proc/self/status, reset through /proc/self/clear_refs where the kernel
allows it); and the bytes of the tensors autograd saves for backward in one training
forward (unique storages, parameters included). Each is also given as a ratio to
K=1 measured in the same run, beside the reference code's numbers.

    python benchmarks/search_step.py                  # K = 1, 2, 4, 8; 10 steps each
    python benchmarks/search_step.py --ks 1,4 --steps 3
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

from pcdarts import Architect, ArchitectConfig, Supernet, build_supernet
from pcdarts.runtime import frozen

WARMUP_STEPS = 2
# Weight SGD of the benchmark: the CIFAR evaluation values the brief fixes (SPEC §5/§6).
WEIGHT_LR = 0.025
WEIGHT_MOMENTUM = 0.9
WEIGHT_DECAY = 3e-4
WEIGHT_GRAD_CLIP = 5.0
# Supernet of the CIFAR search (SPEC §5), 32x32 inputs.
CHANNELS, LAYERS, CLASSES, IMAGE_SIZE = 16, 8, 10, 32

# Reference code on a 2-core CPU, batch 32, first order, median of 10 steps (SPEC §7).
REFERENCE: dict[int, dict[str, float]] = {
    1: {"step_s": 11.4, "peak_mb": 4800.0, "saved_mb": 4000.0},
    4: {"step_s": 4.1, "peak_mb": 1500.0, "saved_mb": 1200.0},
}
MB = 1e6  # the reference's "GB" are read as 1e9 bytes


def weight_step(model: Supernet, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    """One SGD step on the weights; the arch parameters are frozen meanwhile."""
    criterion = nn.functional.cross_entropy
    with frozen(model.arch_parameters()):
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(list(model.weight_parameters()), WEIGHT_GRAD_CLIP)
        optimizer.step()
    return loss.detach()


def saved_tensor_bytes(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward in one forward."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    del loss
    return sum(storages.values())


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


def measure(k: int, batch: int, steps: int, threads: int) -> dict[str, Any]:
    """Time and memory of search iterations at one K, in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_supernet("cifar10", C=CHANNELS, layers=LAYERS, num_classes=CLASSES, k=k)
    model.train()
    architect = Architect(model, nn.functional.cross_entropy, ArchitectConfig())
    optimizer = torch.optim.SGD(
        model.weight_parameters(),
        lr=WEIGHT_LR,
        momentum=WEIGHT_MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )
    shape = (batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    x_arch, x_train = torch.randn(shape), torch.randn(shape)
    y_arch, y_train = torch.randint(0, CLASSES, (batch,)), torch.randint(0, CLASSES, (batch,))

    _reset_peak()
    baseline_kb = _status_kb("VmRSS") or _peak_kb()
    times = []
    for i in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        architect.step(x_arch, y_arch)
        weight_step(model, optimizer, x_train, y_train)
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    peak_kb = _peak_kb() - baseline_kb
    saved = saved_tensor_bytes(model, x_arch, y_arch)
    return {
        "k": k,
        "step_s": statistics.median(times),
        "peak_mb": peak_kb * 1024 / MB,
        "saved_mb": saved / MB,
    }


def _run_worker(k: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        str(k),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return row


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "-"


def format_table(rows: list[dict[str, Any]], batch: int) -> str:
    base = next((r for r in rows if r["k"] == 1), None)
    header = (
        f"{'K':>2} | {'step s':>7} {'xK=1':>5} {'ref s':>6} {'ref x':>5} | "
        f"{'peak MB':>8} {'xK=1':>5} {'ref MB':>7} {'ref x':>5} | "
        f"{'saved MB':>8} {'xK=1':>5} {'ref MB':>7} {'ref x':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = [f"{r['k']:>2}"]
        for key, fmt in (("step_s", "{:7.2f}"), ("peak_mb", "{:8.0f}"), ("saved_mb", "{:8.0f}")):
            ref, ref1 = REFERENCE.get(r["k"], {}).get(key), REFERENCE[1][key]
            ours_ratio = _ratio(r[key], base[key] if base else None)
            ref_text = "-" if ref is None else fmt.format(ref).strip()
            ref_ratio = "-" if ref is None else _ratio(ref, ref1)
            width = 6 if key == "step_s" else 7
            cells.append(f"{fmt.format(r[key])} {ours_ratio:>5} {ref_text:>{width}} {ref_ratio:>5}")
        lines.append(" | ".join(cells))
    lines.append(
        f"batch {batch}; ref = reference PC-DARTS code, 2-core CPU, batch 32 (SPEC §7); "
        "xK=1 = ratio to K=1 of the same run"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,2,4,8", help="comma-separated K values")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after 2 warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(measure(args.worker, args.batch, args.steps, args.threads)))
        return
    ks = [int(k) for k in args.ks.split(",")]
    print(
        f"search iteration (first-order arch step + weight SGD step), CPU, "
        f"{args.threads} threads, batch {args.batch}, median of {args.steps} after "
        f"{WARMUP_STEPS} warm-up"
    )
    rows = []
    for k in ks:
        rows.append(_run_worker(k, args))
        print(
            f"  K={k}: {rows[-1]['step_s']:.2f} s, peak +{rows[-1]['peak_mb']:.0f} MB, "
            f"saved {rows[-1]['saved_mb']:.0f} MB",
            flush=True,
        )
    print(format_table(rows, args.batch))


if __name__ == "__main__":
    main()
