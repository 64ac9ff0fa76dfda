"""Stage `report`: the paper's tables with our numbers beside them, and the figures.

    python -m stages.report

Reads the metrics, counts, histories and diagrams the other stages wrote (all declared
DVC deps) and writes ``reports/results.md`` and ``reports/results.html`` (the same
content), the search-dynamics figures and ``reports/summary.json`` (every number in the
tables, for tests and tools). Every row says the profile and the data it came from: a
``tiny`` run on the digits is labelled as such and never reads like a paper-scale result.
"""

from __future__ import annotations

import sys
from typing import Any

from pipeline.config import REPO_ROOT, load_params
from pipeline.io import copy_file, read_json, save_png, write_json, write_text
from pipeline.paths import derive_outs, report_outs, search_outs, train_outs, transfer_outs
from pipeline.paths import report_outs as outs  # noqa: F401 - the declarations test reads it
from pipeline.stage import run_stage, tracked
from reporting import search_diagnostics
from reporting.figures import search_dynamics_figure
from reporting.render import to_html, to_markdown
from reporting.results import DATASETS, build_report, search_figure, searches

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = [
    "seed",
    "seeds",
    "k_values",
    "profile",
    "report",
    "derive",
    "train_cifar10.cells",
    "train_imagenet.cells",
]
HEADLINE = {  # MLflow summary metric: the table whose first row it is
    "report/cifar10_test_top1_err": "CIFAR-10",
    "report/imagenet_cifar_cell_top1_err": "ImageNet, CIFAR-searched cell",
    "report/imagenet_imagenet_cell_top1_err": "ImageNet, ImageNet-searched cell",
}


def main() -> None:
    p = load_params()
    o = {name: REPO_ROOT / path for name, path in report_outs().items()}
    runs = [transfer_outs()["run"]]
    runs += [train_outs(d, c)["run"] for d in DATASETS for c in getattr(p, f"train_{d}").cells]
    with tracked(
        p, "report", params=p.report, run_file=o["run"], upstream_run_files=runs
    ) as tracker:
        blocks, summary = build_report(p)
        for dataset in DATASETS:  # copies: reports/ is complete on its own
            for kind in ("normal", "reduction"):
                copy_file(REPO_ROOT / derive_outs(dataset)[kind], o[f"cell_{dataset}_{kind}"])
            stage = f"search@{dataset}-{p.seed}"
            history: list[dict[str, Any]] = read_json(
                REPO_ROOT / search_outs(dataset, p.seed)["history"], stage
            )
            fig = search_dynamics_figure(history, f"PC-DARTS search on {dataset} ({p.profile})")
            save_png(fig, o[f"dynamics_{dataset}"])
        for stage, path in searches(p).items():  # reports/searches/: a figure per search
            history = read_json(REPO_ROOT / path, stage)
            fig = search_diagnostics.figure(history, f"{stage} ({p.profile}): trajectories")
            save_png(fig, REPO_ROOT / search_figure(stage))
        write_text(o["markdown"], to_markdown(blocks))
        write_text(o["html"], to_html(blocks))
        write_json(o["summary"], summary)
        tracker.log_summary(
            {k: next(r["ours"] for r in summary["tables"][t].values()) for k, t in HEADLINE.items()}
        )
        for key, path in o.items():
            if key not in ("run", "searches"):
                tracker.log_artifact(path, "report")
        for path in sorted(o["searches"].glob("*.png")):
            tracker.log_artifact(path, "report/searches")
    print(f"report: {o['markdown'].relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:])
