"""The cost of one Hessian-eigenvalue evaluation (issue 25), beside one search iteration.

One evaluation = one forward and a backward with ``create_graph`` of the arch-split loss on
the fixed batch, then one Hessian-vector product (a backward through that graph) per
power-iteration step (pcdarts.diagnostics.dominant_eigenvalue; 20 at most by default,
loop.diagnostics.hessian_iterations). Measured here with the tolerance at 0, so that exactly
``--products`` products run; the per-product time gives any other count. The reference unit
is one first-order search iteration (an architect step and a weight step, each on a batch
of the same size), so the overhead reads as "evaluation = n iterations". Times are CPU
seconds of this process (``time.process_time``): with one thread (the default) they are
what an otherwise idle core would take, also on a machine others share.

    python benchmarks/hessian_cost.py                            # tiny CIFAR profile size
    python benchmarks/hessian_cost.py --C 16 --layers 8 --image-size 32 --batch 32  # paper-ish
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pcdarts import Architect, ArchitectConfig, Supernet, create_model
from pcdarts.diagnostics import dominant_eigenvalue
from pcdarts.runtime import frozen

CLASSES = 10
WEIGHT_LR = 0.025  # the search's weight SGD is irrelevant to the cost; DARTS' values
WEIGHT_MOMENTUM = 0.9


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(
        "pcdarts_supernet_cifar10", C=args.C, layers=args.layers, num_classes=CLASSES, k=args.k
    )
    assert isinstance(model, Supernet)
    model.train()
    criterion = nn.CrossEntropyLoss()
    architect = Architect(model, criterion, ArchitectConfig())
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=WEIGHT_LR, momentum=WEIGHT_MOMENTUM)
    shape = (args.batch, 3, args.image_size, args.image_size)
    x, y = torch.randn(shape), torch.randint(0, CLASSES, (args.batch,))

    def iteration() -> None:
        architect.step(x, y)
        optimizer.zero_grad(set_to_none=True)
        with frozen(model.arch_parameters()):
            criterion(model(x), y).backward()
        optimizer.step()

    iterations = []
    for i in range(args.warmup + args.repeats):
        start = time.process_time()
        iteration()
        if i >= args.warmup:
            iterations.append(time.process_time() - start)
    before = _peak_mb()
    evaluations = []
    for _ in range(args.repeats):
        start = time.process_time()
        result = dominant_eigenvalue(
            model,
            lambda: criterion(model(x), y),
            model.arch_parameters(),
            iterations=args.products,
            tolerance=0.0,
            seed=0,
        )
        evaluations.append(time.process_time() - start)
    start = time.process_time()  # the fixed part: forward and the create_graph backward
    dominant_eigenvalue(
        model,
        lambda: criterion(model(x), y),
        model.arch_parameters(),
        iterations=1,
        tolerance=0.0,
        seed=0,
    )
    one = time.process_time() - start
    evaluation = statistics.median(evaluations)
    per_product = (evaluation - one) / (args.products - 1)
    iteration_s = statistics.median(iterations)
    return {
        "size": {k: getattr(args, k) for k in ("C", "layers", "k", "batch", "image_size")},
        "threads": args.threads,
        "clock": "process_time (CPU seconds)",
        "products": args.products,
        "evaluation_s": evaluation,
        "forward_and_graph_s": one - per_product,
        "per_product_s": per_product,
        "search_iteration_s": iteration_s,
        "evaluation_in_iterations": evaluation / iteration_s,
        "peak_rss_mb": _peak_mb(),
        "peak_rss_before_eigenvalue_mb": before,
        "eigenvalue": result.value,
        "machine": platform.processor() or platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=int, default=8, help="tiny profile: 8 (paper: 16)")
    parser.add_argument("--layers", type=int, default=5, help="tiny profile: 5 (paper: 8)")
    parser.add_argument("--k", type=int, default=4, help="partial-channel K (CIFAR-10: 4)")
    parser.add_argument("--batch", type=int, default=64, help="tiny profile: 64 (paper: 256)")
    parser.add_argument("--image-size", type=int, default=16, help="tiny: 16 (paper: 32)")
    parser.add_argument("--products", type=int, default=20, help="Hessian-vector products")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    row = measure(args)
    print(json.dumps(row))
    print(
        f"C={args.C} layers={args.layers} K={args.k} batch={args.batch} "
        f"{args.image_size}x{args.image_size}, {args.threads} thread(s), CPU seconds: one "
        f"evaluation of {args.products} products {row['evaluation_s']:.2f} s (forward + graph "
        f"{row['forward_and_graph_s']:.2f} s, {row['per_product_s']:.3f} s per product) = "
        f"{row['evaluation_in_iterations']:.1f} search iterations of "
        f"{row['search_iteration_s']:.2f} s; peak RSS {row['peak_rss_mb']:.0f} MB"
    )
    return row


if __name__ == "__main__":
    main()
