"""Stage `derive@<dataset>`: a searched genotype -> cell diagrams and its size at paper scale.

    python -m stages.derive imagenet

Counts parameters and mult-adds of the CIFAR network (C=36, 20 cells, 32x32) and the
ImageNet network (C=48, 14 cells, 224x224) built from the cell, in both conventions
(method §7), and flags an ImageNet network over the mobile budget (600 M).
"""

from __future__ import annotations

import sys
from typing import Any

from pcdarts import count_macs, count_params, create_model
from pcdarts.genotypes import Genotype, load_genotype
from stages.common import run_stage, tracked, upstream, write_json
from stages.config import REPO_ROOT, DeriveParams, load_params
from stages.diagrams import save_cell_diagrams
from stages.paths import derive_outs as outs
from stages.paths import search_outs

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = ["seed", "profile", "derive"]


def paper_scale_counts(genotype: Genotype, dp: DeriveParams) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for name, net, size, classes in (
        ("cifar10", dp.cifar_network, dp.cifar_image_size, dp.cifar_classes),
        ("imagenet", dp.imagenet_network, dp.imagenet_image_size, dp.imagenet_classes),
    ):
        model = create_model(
            f"pcdarts_{name}",
            genotype=genotype,
            C=net.C,
            layers=net.layers,
            num_classes=classes,
            auxiliary=net.auxiliary,
        )
        counts[f"{name}/params_m"] = count_params(model)
        counts[f"{name}/macs_m"] = count_macs(model, size, "paper")
        counts[f"{name}/macs_conv_linear_m"] = count_macs(model, size, "conv_linear")
    counts["imagenet/over_mobile_budget"] = counts["imagenet/macs_m"] > dp.mobile_budget_macs_m
    counts["mobile_budget_macs_m"] = dp.mobile_budget_macs_m
    return counts


def main(dataset: str) -> None:
    p = load_params()
    genotype = load_genotype(
        upstream(REPO_ROOT / search_outs(dataset)["genotype"], f"search@{dataset}")
    )
    o = {k: REPO_ROOT / v for k, v in outs(dataset).items()}
    with tracked(
        p,
        f"derive@{dataset}",
        params=p.derive,
        run_file=outs(dataset)["run"],
        dataset=dataset,
        upstream_run_files=[search_outs(dataset)["run"]],
    ) as tracker:
        paths = save_cell_diagrams(genotype, o["normal"].parent)
        assert {paths["normal"], paths["reduction"]} == {o["normal"], o["reduction"]}
        counts = paper_scale_counts(genotype, p.derive)
        write_json(
            o["counts"],
            {
                **counts,
                "genotype": genotype.to_dict(),
                "conventions": {
                    "macs_m": "conv + linear + 2/BN output + 1/ReLU output (the paper's)",
                    "macs_conv_linear_m": "conv + linear only",
                },
            },
        )
        tracker.log_summary(
            {f"model/{k}": float(v) for k, v in counts.items() if k != "mobile_budget_macs_m"}
        )
        tracker.set_tags({"genotype": str(genotype)})
        tracker.log_dict(genotype.to_dict(), "genotype.json")
        for key in ("normal", "reduction", "counts"):
            tracker.log_artifact(o[key])
    flag = (
        "OVER the mobile budget"
        if counts["imagenet/over_mobile_budget"]
        else "within the mobile budget"
    )
    print(f"derive@{dataset}: ImageNet network {counts['imagenet/macs_m']:.0f} M mult-adds, {flag}")


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
