"""Stage `derive@<dataset>`: a searched genotype -> cell diagrams and its size at paper scale.

    python -m stages.derive imagenet

Counts parameters and mult-adds of the CIFAR network (C=36, 20 cells, 32x32) and the
ImageNet network (C=48, 14 cells, 224x224) built from the cell, in both conventions
(method §7), and flags an ImageNet network over the mobile budget (600 M).
"""

from __future__ import annotations

import sys

from pcdarts.genotypes import load_genotype
from pipeline.config import REPO_ROOT, load_params
from pipeline.io import upstream, write_json
from pipeline.paths import derive_outs as outs
from pipeline.paths import search_outs
from pipeline.stage import run_stage, tracked
from reporting.counts import paper_scale_counts
from reporting.diagrams import save_cell_diagrams

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = ["seed", "profile", "derive"]


def main(dataset: str) -> None:
    p = load_params()
    genotype = load_genotype(
        upstream(REPO_ROOT / search_outs(dataset, p.seed)["genotype"], f"search@{dataset}-{p.seed}")
    )
    o = {name: REPO_ROOT / path for name, path in outs(dataset).items()}
    with tracked(
        p,
        f"derive@{dataset}",
        params=p.derive,
        run_file=outs(dataset)["run"],
        dataset=dataset,
        upstream_run_files=[search_outs(dataset, p.seed)["run"]],
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
    run_stage(main, *sys.argv[1:])
