"""Search-step throughput with and without bf16 autocast and channels-last, side by side.

Times the search loop's own epoch (``pcdarts.search.Searcher``: per iteration a
first-order architect step on an arch batch, then an SGD step of the weights on a
weight batch, with the loop's host syncs), so the numbers are what ``dvc repro`` runs.
Every variant builds the same supernet from the same seed, warms up for ``--warmup``
iterations, then runs ``--steps`` timed ones; the variants take turns for ``--rounds``
rounds and the median round counts, so a clock or thermal drift touches them alike.
Reported per variant: ms per iteration, weight-batch images per second, the ratio to
fp32 of the same run, and peak CUDA memory.

    python benchmarks/search_throughput.py                               # paper CIFAR-10 search
    python benchmarks/search_throughput.py --dataset imagenet --batch 256 --image-size 224
    python benchmarks/search_throughput.py --device cpu --C 4 --layers 3 --batch 8 --steps 2

On a CPU the library keeps bf16 autocast and channels-last off (``pcdarts.runtime``'s
``autocast`` and ``memory_format``: CUDA only), so only fp32 runs there and the table says so.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import ArchitectConfig, SearchConfig, Supernet, create_model
from pcdarts.search import Searcher

CLASSES = 10  # CIFAR-10's classes; the head's size barely matters to the step's cost
MB = 1e6


@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool
    channels_last: bool


VARIANTS = (
    Variant("fp32", bf16=False, channels_last=False),
    Variant("bf16", bf16=True, channels_last=False),
    Variant("channels_last", bf16=False, channels_last=True),
    Variant("bf16+channels_last", bf16=True, channels_last=True),
)


def _loader(n: int, batch: int, size: int, seed: int, pin: bool) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.randn(n, 3, size, size, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    )
    return DataLoader(data, batch_size=batch, shuffle=False, drop_last=True, pin_memory=pin)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variant: Variant, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Seconds per iteration over ``args.steps`` iterations, after ``args.warmup``."""
    torch.manual_seed(0)
    model = create_model(
        f"pcdarts_supernet_{args.dataset}",
        C=args.C,
        layers=args.layers,
        num_classes=CLASSES,
        k=args.k,
    )
    assert isinstance(model, Supernet)  # the registry's name says so; mypy cannot
    config = SearchConfig(
        epochs=2,
        warmup_epochs=0,  # architect steps from the first iteration: the search's steady state
        architect=ArchitectConfig(),
        bf16=variant.bf16,
        channels_last=variant.channels_last,
    )
    searcher = Searcher(model, config, device, show_progress=False)
    pin = device.type == "cuda"
    warm = _loader(args.batch * args.warmup, args.batch, args.image_size, 1, pin)
    timed = _loader(args.batch * args.steps, args.batch, args.image_size, 2, pin)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    searcher.train_one_epoch(0, warm, warm)  # cuDNN algorithm picks, allocator warm-up
    _sync(device)
    start = time.perf_counter()
    searcher.train_one_epoch(1, timed, timed)
    _sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else float("nan")
    del searcher, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"step_s": seconds, "peak_mb": peak}


def format_table(rows: dict[str, dict[str, float]], batch: int) -> str:
    base = rows["fp32"]["step_s"]
    header = f"{'variant':<20} | {'ms/iter':>8} | {'images/s':>9} | {'x fp32':>6} | {'peak MB':>8}"
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        peak = "-" if r["peak_mb"] != r["peak_mb"] else f"{r['peak_mb']:.0f}"  # NaN: CPU
        lines.append(
            f"{name:<20} | {r['step_s'] * 1e3:8.1f} | {batch / r['step_s']:9.1f} | "
            f"{base / r['step_s']:6.2f} | {peak:>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "imagenet"))
    # The paper's CIFAR-10 search (method §5): C=16, 8 cells, K=4, batch 256, 32x32 images.
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per round")
    parser.add_argument("--steps", type=int, default=10, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3, help="median over rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch's default)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    variants = [v for v in VARIANTS if device.type == "cuda" or not (v.bf16 or v.channels_last)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"search iteration (first-order arch step + weight SGD step, Searcher's epoch) on "
        f"{name}: {args.dataset} supernet C={args.C}, {args.layers} cells, K={args.k}, batch "
        f"{args.batch}, {args.image_size}x{args.image_size}; median of {args.rounds} rounds "
        f"of {args.steps} iterations after {args.warmup}"
    )
    if device.type != "cuda":
        print("CPU: bf16 autocast and channels-last are CUDA-only in pcdarts: only fp32 runs")
    times: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    for round_ in range(args.rounds):
        for v in variants:
            times[v.name].append(measure(v, args, device))
            print(f"  round {round_ + 1} {v.name}: {times[v.name][-1]['step_s'] * 1e3:.1f} ms")
    rows = {
        v: {
            "step_s": statistics.median(r["step_s"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs),
        }
        for v, runs in times.items()
    }
    print(format_table(rows, args.batch))
    return rows


if __name__ == "__main__":
    main()
