"""How far float rounding carries a supernet's training: two runs that differ only in the
order of their float sums, measured side by side in one process.

Pairs, each started from the same seed and fed the same batches (SGD on the weights, the
search's settings):

- "threads": the oracle forward on one thread against the oracle on two (oneDNN splits
  its sums differently);
- "fast vs oracle": the fused cell forward against the edge-by-edge oracle, one thread.

Printed every few steps: the largest weight difference and the largest logit difference on
a fixed batch. Where these grow from rounding size to the size of the weights' own updates,
training is chaotic at that size, and only a decision that leads by more than that spread
can be the same on another machine.

    python benchmarks/divergence.py                 # the tiny CIFAR supernet, 40 steps
    python benchmarks/divergence.py --C 16 --layers 8 --image-size 32 --steps 20
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

from pcdarts import Supernet, create_model

# The search's weight SGD (method §5), as in the tiny profile.
LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 3e-4
CLASSES = 10


def _model(args: argparse.Namespace, fused: bool) -> Supernet:
    torch.manual_seed(args.seed)
    model = create_model(
        "pcdarts_supernet_cifar10",
        C=args.C,
        layers=args.layers,
        num_classes=CLASSES,
        k=args.k,
        fused=fused,
    )
    assert isinstance(model, Supernet)  # the registry's name says so; mypy cannot
    return model.train()


def run_pair(args: argparse.Namespace, pair: str) -> list[tuple[int, float, float]]:
    """(step, max |weight difference|, max |logit difference|) at every report step."""
    fused = (True, False) if pair == "fast vs oracle" else (False, False)
    threads = (1, 2) if pair == "threads" else (1, 1)
    models = [_model(args, f) for f in fused]
    optimizers = [
        torch.optim.SGD(m.weight_parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        for m in models
    ]
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, 3, args.image_size, args.image_size)
    probe = torch.randn(shape, generator=g)
    rows = []
    for step in range(args.steps):
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, CLASSES, (args.batch,), generator=g)
        for model, optimizer, n_threads in zip(models, optimizers, threads, strict=True):
            torch.set_num_threads(n_threads)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        if step % args.every == 0 or step == args.steps - 1:
            torch.set_num_threads(1)
            a, b = (list(m.weight_parameters()) for m in models)
            weights = max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))
            with torch.no_grad():
                logits = (models[0](probe) - models[1](probe)).abs().max().item()
            rows.append((step + 1, weights, logits))
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, list[tuple[int, float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=int, default=8, help="supernet channels (tiny: 8)")
    parser.add_argument("--layers", type=int, default=5, help="supernet cells (tiny: 5)")
    parser.add_argument("--k", type=int, default=4, help="partial-channel K (method §2: 4)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=5, help="report every n steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results = {pair: run_pair(args, pair) for pair in ("threads", "fast vs oracle")}
    print(
        f"weight SGD (lr {LR}, momentum {MOMENTUM}) of the CIFAR supernet, C={args.C}, "
        f"{args.layers} cells, K={args.k}, batch {args.batch}, {args.image_size}x"
        f"{args.image_size}: max |difference| between the two runs of each pair"
    )
    print(
        f"{'step':>5} | {'1 vs 2 threads: weights':>23} {'logits':>9} | "
        f"{'fast vs oracle: weights':>23} {'logits':>9}"
    )
    for (step, w1, l1), (_, w2, l2) in zip(*results.values(), strict=True):
        print(f"{step:>5} | {w1:23.2e} {l1:9.2e} | {w2:23.2e} {l2:9.2e}")
    return results


if __name__ == "__main__":
    main()
