"""Statistics over the stage families: when a search settled, how stable it is over seeds
(per-edge agreement), the searched cell against random cells, the K ablation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pcdarts.genotypes import Genotype
from pcdarts.space import INPUTS_PER_NODE
from reporting.render import _fmt


def edge_agreement(genotype: Genotype, reference: Genotype) -> dict[str, float]:
    """Per cell type, the fraction of ``reference``'s selected (input, op) edges that
    ``genotype`` selects at the same node (8 edges per cell in the DARTS space)."""
    out = {}
    for kind in ("normal", "reduce"):
        a, b = getattr(genotype, kind), getattr(reference, kind)
        shared = sum(
            len(set(a[i : i + INPUTS_PER_NODE]) & set(b[i : i + INPUTS_PER_NODE]))
            for i in range(0, len(b), INPUTS_PER_NODE)
        )
        out[kind] = shared / len(b)
    return out


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (nan for one value)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else float("nan")
    return {"mean": float(array.mean()), "std": std}


STABILITY_COLUMNS = {  # summary key: column header
    "search/derivation_margin": "smallest derivation margin",
    "search/stable_since_epoch": "genotype unchanged since epoch",
    "search/alpha_entropy_normalised": "alpha entropy / uniform",
    "arch/top1_err": "arch-split top-1 error (%)",
    "cifar10/params_m": "params, C=36 20 cells (M)",
    "imagenet/macs_m": "mult-adds 224 (M)",
}


def seed_stability(
    dataset: str, main_seed: int, per_seed: Mapping[int, tuple[Genotype, dict[str, float]]]
) -> tuple[str, tuple[list[str], list[list[str]]], dict[str, Any]]:
    """The searches of ``dataset`` over seeds: (sentence, table, numbers). Each seed's
    genotype against ``main_seed``'s (per-edge agreement, same genotype or not) and its
    results (``STABILITY_COLUMNS``), with mean and standard deviation over the seeds."""
    reference = per_seed[main_seed][0]
    header = ["seed", "normal edges shared", "reduction edges shared", *STABILITY_COLUMNS.values()]
    rows, results = [], []
    for seed, (genotype, values) in per_seed.items():
        agree = edge_agreement(genotype, reference)
        results.append({"seed": seed, "same_genotype": genotype == reference, **agree, **values})
        cells = [f"{agree['normal']:.2f}", f"{agree['reduce']:.2f}"]
        rows.append([str(seed), *cells, *(f"{values[k]:.4g}" for k in STABILITY_COLUMNS)])
    stats: dict[str, Any] = {"seeds": list(per_seed), "per_seed": results}
    for key in ("normal", "reduce", *STABILITY_COLUMNS):
        stats[key] = mean_std([r[key] for r in results])
    rows.append(
        ["mean +- std"]
        + [f"{stats[k]['mean']:.4g} +- {stats[k]['std']:.2g}" for k in ("normal", "reduce")]
        + [f"{stats[k]['mean']:.4g} +- {stats[k]['std']:.2g}" for k in STABILITY_COLUMNS]
    )
    same = sum(r["same_genotype"] for r in results)
    stats["same_as_first"] = same
    text = (
        f"{dataset} search over {len(per_seed)} seeds ({', '.join(map(str, per_seed))}): "
        f"{same} of {len(per_seed)} derive the genotype of seed {main_seed}; on average "
        f"{stats['normal']['mean']:.0%} of its normal and {stats['reduce']['mean']:.0%} of its "
        "reduction edges (input and op) are shared."
    )
    return text, (header, rows), stats


def searched_vs_random(
    dataset: str, searched_err: float, random_errs: Mapping[str, float]
) -> tuple[str, tuple[list[str], list[list[str]]], dict[str, Any]]:
    """The searched cell's test error beside the random cells' mean +- std (same recipe),
    and a plain sentence saying whether the searched cell beats them."""
    spread = mean_std(list(random_errs.values()))
    mean, std = spread["mean"], spread["std"]
    stats: dict[str, Any] = {"searched": searched_err, "random": dict(random_errs), **spread}
    header = ["cell", "test top-1 error (%)"]
    rows = [["searched", f"{searched_err:.4g}"]]
    rows += [[cell, f"{err:.4g}"] for cell, err in random_errs.items()]
    rows.append(
        [
            f"random, mean +- std over {len(random_errs)}",
            f"{mean:.4g} +- {std:.2g}",
        ]
    )
    margin = std if math.isfinite(std) else 0.0
    if searched_err < mean - margin:
        verdict = "beats the random cells by more than one standard deviation"
    elif searched_err < mean:
        verdict = (
            "is better than the random cells' mean, but within one standard deviation: "
            "it does not clearly beat random"
        )
    else:
        verdict = "does NOT beat the random cells"
    stats["beats_random"] = searched_err < mean - margin
    text = (
        f"{dataset}: the searched cell ({searched_err:.4g}%) {verdict} ({mean:.4g} +- {std:.2g}%)."
    )
    return text, (header, rows), stats


def k_ablation(
    per_k: Mapping[int, Mapping[str, Any]],
) -> tuple[tuple[list[str], list[list[str]]], dict[str, Any]]:
    """The K table (method §2) from the ``search_k`` family's metrics, one row per K."""
    header = ["K", "search wall time (s)", "peak memory (MB)", "arch-split top-1 error (%)"]
    rows, table = [], {}
    for k, m in sorted(per_k.items()):
        values = [
            m["cost"].get("wall_seconds"),
            m["cost"].get("peak_memory_mb"),
            m.get("arch/top1_err"),
        ]
        rows.append([str(k), *(_fmt(v) for v in values)])
        table[str(k)] = dict(
            zip(("wall_seconds", "peak_memory_mb", "arch_err"), values, strict=True)
        )
    return (header, rows), table
