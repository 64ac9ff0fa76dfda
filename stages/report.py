"""Stage `report`: the paper's tables with our numbers beside them, and the figures.

    python -m stages.report

Reads the metrics, counts, histories and diagrams the other stages wrote and writes
``reports/results.md`` and ``reports/results.html`` (the same content), the search-dynamics
figures and ``reports/summary.json`` (every number in the tables, for tests and tools).
Every row says the profile and the data it came from: a ``tiny`` run on the digits is
labelled as such and never reads like a paper-scale result.
"""

from __future__ import annotations

import html
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pcdarts.genotypes import load_genotype
from pcdarts.ops import PRIMITIVES
from pipeline.config import REPO_ROOT, PaperImagenet, Params, load_params
from pipeline.io import atomic_path, read_json, upstream, write_json
from pipeline.paths import (
    MANIFEST,
    derive_outs,
    report_outs,
    search_outs,
    train_outs,
    transfer_outs,
)
from pipeline.paths import report_outs as outs  # noqa: F401 - the declarations test reads it
from pipeline.stage import run_stage, tracked
from pipeline.tracking import finished_runs
from reporting.counts import paper_scale_counts

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = ["seed", "seeds", "profile", "report", "derive"]
DATASETS = ("cifar10", "imagenet")
NOT_PAPER_SCALE = (
    "**Not a paper-scale result.** This run used the `{profile}` profile on {data}: small "
    "networks, few epochs. Its numbers exercise the pipeline; compare them with the paper's "
    "only after `make params ARGS=profile=paper` on the real datasets."
)


@dataclass(frozen=True)
class Row:
    what: str
    ours: float | None
    paper: float | None
    unit: str
    source: str  # the stage and output the number came from
    run: str  # the profile and data of ours, e.g. "tiny, digits"
    comparable: bool  # paper profile on the real data: only then is the difference shown
    paper_known: str = "paper"  # how the paper's number is known (docs/method.md §7)

    def cells(self) -> list[str]:
        confirmed = self.paper_known == "paper"
        diff = None if self.ours is None or self.paper is None else self.ours - self.paper
        return [
            self.what,
            _fmt(self.ours),
            _fmt(self.paper) if confirmed else f"{_fmt(self.paper)} ({self.paper_known})",
            f"{diff:+.4g}" if diff is not None and self.comparable and confirmed else "",
            self.unit,
            self.run,
            self.source,
        ]


HEADER = ["", "ours", "paper", "ours - paper", "unit", "ours: profile, data", "from"]


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"


@dataclass(frozen=True)
class RunInfo:
    label: str  # "tiny, digits"
    comparable: bool

    def row(
        self,
        what: str,
        ours: float | None,
        paper: float | None,
        unit: str,
        src: str,
        paper_known: str = "paper",
    ) -> Row:
        return Row(what, ours, paper, unit, src, self.label, self.comparable, paper_known)


def run_info(p: Params, source: str) -> RunInfo:
    data = "digits" if source == "embedded" else "real data"
    return RunInfo(f"{p.profile}, {data}", p.profile == "paper" and source != "embedded")


def _load(path: Path, stage: str) -> Any:
    return read_json(REPO_ROOT / path, stage)


def _cost_rows(r: RunInfo, metrics: dict[str, Any], paper_days: float, stage: str) -> list[Row]:
    cost = metrics["cost"]
    on_gpu = cost["device_type"] == "cuda"
    return [
        r.row(
            "search cost" + ("" if on_gpu else f" ({cost['unit']}, not GPU-days)"),
            cost["device_days"],
            paper_days if on_gpu else None,
            "GPU-days" if on_gpu else cost["unit"],
            f"{stage} metrics.json: cost",
        ),
        r.row("search wall time", cost["wall_seconds"] / 3600, None, "hours", stage),
    ]


def cifar_rows(p: Params, r: RunInfo) -> list[Row]:
    paper = p.report.paper.cifar10
    trained = _load(train_outs("cifar10")["metrics"], "train_cifar10")
    counts = _load(derive_outs("cifar10")["counts"], "derive@cifar10")
    search = _load(search_outs("cifar10")["metrics"], "search@cifar10")
    return [
        r.row(
            "CIFAR-10 test error",
            trained["test/top1_err"],
            paper.test_top1_err,
            "%",
            "train_cifar10",
        ),
        r.row(
            "params at paper size (C=36, 20 cells)",
            counts["cifar10/params_m"],
            paper.params_m,
            "M",
            "derive@cifar10",
        ),
        r.row(
            "params of the trained network", trained["model/params_m"], None, "M", "train_cifar10"
        ),
        *_cost_rows(r, search, paper.search_gpu_days, "search@cifar10"),
    ]


def imagenet_rows(p: Params, r: RunInfo, cell: str) -> list[Row]:
    name = {"cifar10": "cifar", "imagenet": "imagenet"}[cell]
    paper: PaperImagenet = getattr(p.report.paper, f"imagenet_{name}_cell")
    stage = f"train_imagenet@{cell}"
    trained = _load(train_outs("imagenet", cell)["metrics"], stage)
    counts = _load(derive_outs(cell)["counts"], f"derive@{cell}")
    search = _load(search_outs(cell)["metrics"], f"search@{cell}")
    return [
        r.row("top-1 error", trained["test/top1_err"], paper.top1_err, "%", stage),
        r.row("top-5 error", trained["test/top5_err"], paper.top5_err, "%", stage),
        r.row(
            "params at paper size (C=48, 14 cells)",
            counts["imagenet/params_m"],
            paper.params_m,
            "M",
            f"derive@{cell}",
        ),
        r.row(
            "mult-adds, paper convention (+BN, ReLU)",
            counts["imagenet/macs_m"],
            paper.macs_m,
            "M",
            f"derive@{cell}",
        ),
        r.row(
            "mult-adds, conv + linear only",
            counts["imagenet/macs_conv_linear_m"],
            None,
            "M",
            f"derive@{cell}",
        ),
        *_cost_rows(r, search, paper.search_gpu_days, f"search@{cell}"),
    ]


def ssd_rows(p: Params, r: RunInfo) -> list[Row]:
    m = _load(transfer_outs()["metrics"], "transfer_ssd")
    init = "ImageNet-retrained" if m.get("pretrained", True) else "randomly initialised"
    rows = [
        r.row(
            f"bbox AP ({init} backbone)",
            100 * m["coco/bbox_mAP"],
            p.report.paper.ssd_coco_ap,
            "AP (%)",
            "transfer_ssd",
            paper_known="unconfirmed",  # not confirmed from the paper's own table (method §7)
        )
    ]
    for key, what in (("coco/bbox_mAP_50", "AP50"), ("coco/bbox_mAP_75", "AP75")):
        rows.append(r.row(what, 100 * m[key], None, "AP (%)", "transfer_ssd"))
    return rows


def stable_since(history: list[dict[str, Any]]) -> int | None:
    """The first epoch from which the genotype never changed again (None: it changed last)."""
    if not history or history[-1]["genotype_changed"]:
        return None
    since = history[-1]["epoch"]
    for entry in reversed(history):
        if entry["genotype_changed"]:
            break
        since = entry["epoch"]
    return int(since)


def _softmax(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, dtype=np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def search_dynamics_figure(history: list[dict[str, Any]], title: str) -> Figure:
    """Per cell type: final softmaxed alphas (edge x op), betas per edge over epochs, entropy."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    for row, kind in enumerate(("normal", "reduce")):
        alphas = _softmax(history[-1][f"alphas_{kind}"])
        ax = axes[row, 0]
        image = ax.imshow(alphas, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("edge")
        ax.set_title(f"{kind}: softmax(alpha), last epoch")
        fig.colorbar(image, ax=ax)
        ax = axes[row, 1]
        betas = [h.get(f"betas_{kind}") for h in history]
        if all(b is not None for b in betas):
            weights = np.asarray(betas, dtype=np.float64)
            for edge in range(weights.shape[1]):
                ax.plot(epochs, weights[:, edge], lw=1)
            ax.set_title(f"{kind}: edge weights (softmaxed beta per node)")
        else:
            ax.set_title(f"{kind}: no betas (edge normalisation off)")
        ax.set_xlabel("epoch")
        ax = axes[row, 2]
        ax.plot(epochs, [h[f"alpha_entropy_{kind}"] for h in history], marker="o")
        ax.axhline(math.log(len(PRIMITIVES)), color="grey", ls="--", lw=1, label="uniform")
        ax.set_title(f"{kind}: mean alpha entropy")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    return fig


def seed_stability(p: Params, dataset: str = "cifar10") -> tuple[list[str], dict[str, Any]]:
    """The search over ``seed`` and every ``seeds``: same genotype? spread of the results?

    Results per seed: the derived cell's size at paper scale (params, mult-adds) and the
    supernet's final arch-split error; mean and standard deviation over the seeds.
    """
    seeds: list[tuple[int, int | None]] = [(p.seed, None)] + [(s, s) for s in p.seeds]
    genotypes, results = [], []
    for seed, extra in seeds:
        stage = f"search@{dataset}" if extra is None else f"search_seed@{dataset}-{seed}"
        genotype = load_genotype(
            upstream(REPO_ROOT / search_outs(dataset, extra)["genotype"], stage)
        )
        metrics = _load(search_outs(dataset, extra)["metrics"], stage)
        counts = paper_scale_counts(genotype, p.derive)
        genotypes.append(genotype)
        results.append(
            {
                "seed": seed,
                "arch/top1_err": metrics["arch/top1_err"],
                "cifar10/params_m": counts["cifar10/params_m"],
                "imagenet/macs_m": counts["imagenet/macs_m"],
            }
        )
    same = sum(g == genotypes[0] for g in genotypes)
    lines = [
        f"{dataset} search over {len(seeds)} seeds ({', '.join(str(s) for s, _ in seeds)}): "
        f"{same} of {len(seeds)} derive the genotype of seed {p.seed}; "
        f"{len(set(genotypes))} distinct genotypes."
    ]
    stats: dict[str, Any] = {"seeds": [s for s, _ in seeds], "same_as_first": same}
    header = "| seed | arch-split top-1 error (%) | params, C=36 20 cells (M) | mult-adds 224 (M) |"
    rows = [header, "|---|---|---|---|"]
    for r in results:
        values = [r["arch/top1_err"], r["cifar10/params_m"], r["imagenet/macs_m"]]
        rows.append(f"| {r['seed']} | " + " | ".join(f"{v:.4g}" for v in values) + " |")
    for key in ("arch/top1_err", "cifar10/params_m", "imagenet/macs_m"):
        values = np.asarray([r[key] for r in results])
        std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        stats[key] = {"mean": float(values.mean()), "std": std}
    rows.append(
        "| mean +- std | "
        + " | ".join(
            f"{stats[k]['mean']:.4g} +- {stats[k]['std']:.2g}"
            for k in ("arch/top1_err", "cifar10/params_m", "imagenet/macs_m")
        )
        + " |"
    )
    stats["per_seed"] = results
    return lines + ["\n".join(rows)], stats


K_VALUES = (1, 2, 4, 8)  # method §2: the partial-channel ablation


def k_ablation(p: Params, dataset: str = "cifar10") -> tuple[str, dict[str, Any]] | None:
    """The K table from the tracking store's finished searches of this profile, newest run
    per K; None when fewer than two K values have been searched (run the grid first:
    `dvc exp run --queue -S search.cifar10.network.k=1,2,4,8 && dvc queue start`)."""
    runs = finished_runs(
        REPO_ROOT, p.tracking.tracking_uri, p.tracking.experiment, f"search@{dataset}"
    )
    latest: dict[int, dict[str, Any]] = {}
    for run in runs:  # newest first
        k = run["params"].get("network.k")
        if run["params"].get("profile") == p.profile and k is not None:
            latest.setdefault(int(k), run)
    if len(latest) < 2:
        return None
    rows = [
        "| K | search wall time (s) | peak memory (MB) | arch-split top-1 error (%) | run |",
        "|---|---|---|---|---|",
    ]
    table: dict[str, Any] = {}
    for k in sorted(latest):
        m = latest[k]["metrics"]
        values = [m.get("cost/wall_seconds"), m.get("cost/peak_memory_mb"), m.get("arch/top1_err")]
        rows.append(
            f"| {k} | " + " | ".join(_fmt(v) for v in values) + f" | {latest[k]['run_id'][:8]} |"
        )
        table[str(k)] = {
            "wall_seconds": values[0],
            "peak_memory_mb": values[1],
            "arch_err": values[2],
        }
    return "\n".join(rows), table


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _table_md(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def _table_html(rows: list[Row]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r.cells()) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(p: Params) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The report as (kind, content) blocks, and the numbers of its tables."""
    manifest = _load(MANIFEST, "prepare")
    data = (
        "scikit-learn's handwritten digits in the CIFAR-10 / ImageNet / COCO formats"
        if manifest["source"] == "embedded"
        else "the real datasets"
    )
    r = run_info(p, manifest["source"])
    tables = {
        "CIFAR-10": cifar_rows(p, r),
        "ImageNet, CIFAR-searched cell": imagenet_rows(p, r, "cifar10"),
        "ImageNet, ImageNet-searched cell": imagenet_rows(p, r, "imagenet"),
        "SSD on COCO, ImageNet-searched backbone": ssd_rows(p, r),
    }
    blocks: list[tuple[str, Any]] = [("h1", "PC-DARTS reproduction: results")]
    blocks.append(("p", f"Profile `{p.profile}`, seed {p.seed}, data: {data}."))
    if not r.comparable:
        blocks.append(("p", NOT_PAPER_SCALE.format(profile=p.profile, data=data)))
    for title, rows in tables.items():
        blocks += [("h2", title), ("table", rows)]
    blocks.append(("h2", "Cells"))
    summary: dict[str, Any] = {"profile": p.profile, "data": manifest["source"], "tables": {}}
    for title, rows in tables.items():
        summary["tables"][title] = {
            r.what: {"ours": r.ours, "paper": r.paper, "paper_known": r.paper_known} for r in rows
        }
    for dataset in DATASETS:
        genotype = load_genotype(
            upstream(REPO_ROOT / search_outs(dataset)["genotype"], f"search@{dataset}")
        )
        blocks.append(("p", f"{dataset}-searched cell: {_genotype_text(genotype.to_dict())}"))
        for kind in ("normal", "reduction"):
            rel = report_outs()[f"cell_{dataset}_{kind}"].relative_to("reports")
            blocks.append(("img", (str(rel), f"{dataset}-searched {kind} cell")))
    blocks.append(("h2", "Seed stability"))
    stability_text, summary["seed_stability"] = seed_stability(p)
    blocks += [("p", text) for text in stability_text[:1]] + [("pre_md", stability_text[1])]
    blocks.append(("h2", "K ablation (partial channels, method §2)"))
    ablation = k_ablation(p)
    if ablation is None:
        blocks.append(
            (
                "p",
                f"Fewer than two values of K searched with this profile yet (of {K_VALUES}); "
                "run the grid: `dvc exp run --queue -S search.cifar10.network.k=1,2,4,8` then "
                "`dvc queue start`, and the next report lists them (read from the MLflow store).",
            )
        )
    else:
        blocks.append(("p", "Newest finished CIFAR-10 search per K in the MLflow store."))
        blocks.append(("pre_md", ablation[0]))
        summary["k_ablation"] = ablation[1]
    blocks.append(("h2", "Search dynamics"))
    for dataset in DATASETS:
        history = _load(search_outs(dataset)["history"], f"search@{dataset}")
        since = stable_since(history)
        note = (
            f"genotype unchanged from epoch {since} on"
            if since is not None
            else "the genotype still changed in the last epoch"
        )
        summary[f"stable_since/{dataset}"] = since
        blocks.append(("p", f"{dataset} search, {len(history)} epochs: {note}."))
        figure = report_outs()[f"dynamics_{dataset}"]
        blocks.append(("img", (figure.name, f"{dataset} search dynamics")))
    return blocks, summary


def _genotype_text(genotype: dict[str, Any]) -> str:
    def cell(gene: list[list[Any]]) -> str:
        nodes = [gene[i : i + 2] for i in range(0, len(gene), 2)]
        return " | ".join(" + ".join(f"{op}({src})" for op, src in node) for node in nodes)

    return f"normal `{cell(genotype['normal'])}`; reduction `{cell(genotype['reduce'])}`"


def to_markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}")
        elif kind == "h2":
            out.append(f"## {content}")
        elif kind == "table":
            out.append(_table_md(content))
        elif kind == "img":
            out.append(f"![{content[1]}]({content[0]})")
        elif kind == "pre_md":  # a markdown table written as text
            out.append(content)
        else:
            out.append(content)
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "table":
            out.append(_table_html(content))
        elif kind == "img":
            src, alt = (html.escape(c) for c in content)
            out.append(f'<img src="{src}" alt="{alt}" style="max-width:100%">')
        elif kind == "pre_md":
            out.append(f"<pre>{html.escape(content)}</pre>")
        else:
            text = html.escape(content).replace("**", "")
            out.append(f"<p>{text}</p>")
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    body = "\n".join(out)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>PC-DARTS results</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


def main() -> None:
    p = load_params()
    o = {k: REPO_ROOT / v for k, v in report_outs().items()}
    upstream = [train_outs("cifar10")["run"], transfer_outs()["run"]]
    upstream += [train_outs("imagenet", c)["run"] for c in DATASETS]
    with tracked(
        p, "report", params=p.report, run_file=report_outs()["run"], upstream_run_files=upstream
    ) as tracker:
        blocks, summary = build_report(p)
        for dataset in DATASETS:  # copies: reports/ is complete on its own
            for kind in ("normal", "reduction"):
                with atomic_path(o[f"cell_{dataset}_{kind}"]) as tmp:
                    shutil.copyfile(REPO_ROOT / derive_outs(dataset)[kind], tmp)
        for dataset in DATASETS:
            history = _load(search_outs(dataset)["history"], f"search@{dataset}")
            fig = search_dynamics_figure(history, f"PC-DARTS search on {dataset} ({p.profile})")
            _save(fig, o[f"dynamics_{dataset}"])
        for key, text in (("markdown", to_markdown(blocks)), ("html", to_html(blocks))):
            with atomic_path(o[key]) as tmp:
                tmp.write_text(text)
        write_json(o["summary"], summary)
        headline = {
            "report/cifar10_test_top1_err": "CIFAR-10",
            "report/imagenet_cifar_cell_top1_err": "ImageNet, CIFAR-searched cell",
            "report/imagenet_imagenet_cell_top1_err": "ImageNet, ImageNet-searched cell",
        }
        tracker.log_summary(
            {
                key: next(r["ours"] for r in summary["tables"][table].values())
                for key, table in headline.items()
            }
        )
        for key, path in o.items():
            if key != "run":
                tracker.log_artifact(path, "report")
    print(f"report: {o['markdown'].relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    run_stage(main)
