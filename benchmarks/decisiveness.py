"""Does the search decide, or does float rounding? The configured search run twice, side by side.

Both runs are the pipeline's search (``pipeline.search_setup``: the prepared data, the
loaders, the supernet of ``params.yaml``), from the same seed and the same batches. They
differ in one of two ways, smaller than any choice a search should hinge on:

- ``--perturb init`` (default): every initial weight of the second run is moved to the next
  float32 up (one ulp, a relative 6e-8 to 1.2e-7);
- ``--perturb oracle``: the second run uses the edge-by-edge oracle forward instead of the
  fused one (same maths; float sums grouped differently, 2e-6 apart after one step).

Printed per epoch: each run's smallest derivation margin, normalised alpha entropy and
whether its genotype changed; then how many of the two final cells' (op, input) pairs and
inputs agree, and of the pairs either run derives, how many the other derives too, split by
the pair's lead (``--clear``, 0.02 by default). A search that decides gives both runs the same
cells; where pairs that lead clearly are lost as often as close ones, a lead measures one
trajectory, not a decision.

    python benchmarks/decisiveness.py                                  # tiny CIFAR-10, seed 0
    python benchmarks/decisiveness.py --dataset imagenet --perturb oracle
    python benchmarks/decisiveness.py search.cifar10.loop.epochs=20    # Hydra overrides on conf/

Needs the prepared data (``dvc repro prepare``). One thread, as the stages use on the CPU.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcdarts.derivation import Choice, derivation_choices
from pcdarts.genotypes import Genotype
from pcdarts.search import Searcher
from pipeline.config import REPO_ROOT, validate
from pipeline.launch import configure_runtime
from pipeline.search_setup import search_inputs
from stages.compose import compose_params

PERTURBATIONS = ("init", "oracle")
CLEAR_LEAD = 0.02  # issue 13's aim for every choice's lead (softmax weight x edge weight)


def run_search(
    overrides: list[str], dataset: str, seed: int, root: Path, variant: str
) -> list[dict[str, Any]]:
    """One search; its history (one record per epoch). ``variant``: base, init or oracle."""
    p = validate(compose_params(overrides), f"conf/ with overrides {overrides}")
    s = search_inputs(p, dataset, seed, root=root, fused=variant != "oracle")
    model = s.model
    if variant == "init":
        with torch.no_grad():
            for w in model.weight_parameters():
                w.copy_(torch.nextafter(w, torch.full_like(w, math.inf)))
    searcher = Searcher(model, s.params.loop, torch.device("cpu"), show_progress=False)
    return searcher.run(s.weight_loader, s.arch_loader).history


def agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per cell: (op, input) pairs and inputs that two genotypes share, node by node."""
    out = {}
    for cell in ("normal", "reduce"):
        pairs = inputs = 0
        for node in range(len(a[cell]) // 2):
            ea, eb = (g[cell][2 * node : 2 * node + 2] for g in (a, b))
            pairs += len({tuple(e) for e in ea} & {tuple(e) for e in eb})
            inputs += len({e[1] for e in ea} & {e[1] for e in eb})
        out[cell] = (pairs, inputs)
    return out


def final_choices(history: list[dict[str, Any]]) -> list[Choice]:
    """The last epoch's derived pairs with their leads, from the recorded alphas and betas."""
    last = history[-1]
    arrays = [last.get(key) for key in ("alphas_normal", "alphas_reduce")]
    betas = [last.get(key) for key in ("betas_normal", "betas_reduce")]
    return derivation_choices(
        *(np.asarray(a) for a in arrays), *(None if b is None else np.asarray(b) for b in betas)
    )


def kept_by_lead(runs: Sequence[list[dict[str, Any]]], clear: float) -> dict[str, tuple[int, int]]:
    """Pairs each run derives, split by lead at ``clear``: (kept by the other run, all)."""
    counts = {"clear": [0, 0], "close": [0, 0]}
    choices = [final_choices(h) for h in runs]
    for mine, other in ((choices[0], choices[1]), (choices[1], choices[0])):
        theirs = {(c.cell, c.node, c.op, c.input) for c in other}
        for c in mine:
            row = counts["clear" if c.lead >= clear else "close"]
            row[0] += (c.cell, c.node, c.op, c.input) in theirs
            row[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/ (key=value)")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "imagenet"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", default="init", choices=PERTURBATIONS)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="holds data/prepared")
    parser.add_argument("--clear", type=float, default=CLEAR_LEAD, help="a clear lead")
    args = parser.parse_args(argv)
    configure_runtime(torch.device("cpu"))

    runs, seconds = {}, {}
    for variant in ("base", args.perturb):
        start = time.perf_counter()
        runs[variant] = run_search(args.overrides, args.dataset, args.seed, args.root, variant)
        seconds[variant] = time.perf_counter() - start
    a, b = runs.values()
    what = " ".join(args.overrides) or "params as composed"
    print(
        f"{args.dataset} search, seed {args.seed}, {what}"
        f": base against --perturb {args.perturb} ({seconds['base']:.0f} s, "
        f"{seconds[args.perturb]:.0f} s)"
    )
    print(
        f"{'epoch':>5} | {'margin':>8} {'entropy':>7} {'changed':>7} | "
        f"{'margin':>8} {'entropy':>7} {'changed':>7} | same cells"
    )
    for ra, rb in zip(a, b, strict=True):
        cols = []
        for r in (ra, rb):
            m = r["metrics"]
            cols.append(
                f"{m['search/derivation_margin']:8.4f} {m['search/alpha_entropy_normalised']:7.3f}"
                f" {'yes' if r['genotype_changed'] else 'no':>7}"
            )
        same = "yes" if ra["genotype"] == rb["genotype"] else "no"
        print(f"{ra['epoch']:>5} | {cols[0]} | {cols[1]} | {same}")
    agree = agreement(a[-1]["genotype"], b[-1]["genotype"])
    for cell, (pairs, inputs) in agree.items():
        n = len(a[-1]["genotype"][cell])
        print(f"final {cell} cells: {pairs}/{n} (op, input) pairs and {inputs}/{n} inputs agree")
    by_lead = kept_by_lead([a, b], args.clear)
    for kind, sign in (("clear", ">="), ("close", "<")):
        kept, n = by_lead[kind]
        print(
            f"pairs either run leads by {sign} {args.clear}: {kept}/{n} also derived by the other"
        )
    for variant, history in runs.items():
        last = history[-1]
        print(
            f"{variant:>6}: {Genotype.from_dict(last['genotype'])}; smallest margin "
            f"{last['derivation_margin']:.4f}, stable since epoch {last['stable_since_epoch']}"
        )
    return {"runs": runs, "agreement": agree, "kept_by_lead": by_lead}


if __name__ == "__main__":
    main()
