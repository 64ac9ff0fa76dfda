"""The report's content from the stages' declared outputs: the paper's tables with ours
beside them, the cells, seed stability, searched against random cells, the K ablation and
the search dynamics, as renderer blocks and the numbers of its tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcdarts.genotypes import RANDOM_PREFIX, load_genotype
from pipeline.config import REPO_ROOT, SEARCHED, PaperImagenet, Params
from pipeline.io import read_json, upstream
from pipeline.paths import (
    MANIFEST,
    derive_outs,
    report_outs,
    search_k_outs,
    search_outs,
    train_outs,
    transfer_outs,
)
from reporting import memory_k, search_diagnostics
from reporting.counts import paper_scale_counts
from reporting.render import Row, RunInfo
from reporting.statistics import STABILITY_COLUMNS, k_ablation, searched_vs_random, seed_stability

DATASETS = ("cifar10", "imagenet")
NOT_PAPER_SCALE = (
    "**Not a paper-scale result.** This run used the `{profile}` profile on {data}: small "
    "networks, few epochs. Its numbers exercise the pipeline; compare them with the paper's "
    "only after `make params ARGS=profile=paper` on the real datasets."
)


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
    trained = _load(train_outs("cifar10", SEARCHED)["metrics"], "train_cifar10@searched")
    counts = _load(derive_outs("cifar10")["counts"], "derive@cifar10")
    search = _load(search_outs("cifar10", p.seed)["metrics"], f"search@cifar10-{p.seed}")
    return [
        r.row(
            "CIFAR-10 test error",
            trained["test/top1_err"],
            paper.test_top1_err,
            "%",
            "train_cifar10@searched",
        ),
        r.row(
            "params at paper size (C=36, 20 cells)",
            counts["cifar10/params_m"],
            paper.params_m,
            "M",
            "derive@cifar10",
        ),
        r.row(
            "params of the trained network",
            trained["model/params_m"],
            None,
            "M",
            "train_cifar10@searched",
        ),
        *_cost_rows(r, search, paper.search_gpu_days, f"search@cifar10-{p.seed}"),
    ]


def imagenet_rows(p: Params, r: RunInfo, searched_on: str) -> list[Row]:
    name = {"cifar10": "cifar", "imagenet": "imagenet"}[searched_on]
    paper: PaperImagenet = getattr(p.report.paper, f"imagenet_{name}_cell")
    cell = SEARCHED if searched_on == "imagenet" else f"{SEARCHED}:{searched_on}"
    stage, search = f"train_imagenet@{cell}", f"search@{searched_on}-{p.seed}"
    trained = _load(train_outs("imagenet", cell)["metrics"], stage)
    counts = _load(derive_outs(searched_on)["counts"], f"derive@{searched_on}")
    found = _load(search_outs(searched_on, p.seed)["metrics"], search)
    derived = f"derive@{searched_on}"
    return [
        r.row("top-1 error", trained["test/top1_err"], paper.top1_err, "%", stage),
        r.row("top-5 error", trained["test/top5_err"], paper.top5_err, "%", stage),
        r.row(
            "params at paper size (C=48, 14 cells)",
            counts["imagenet/params_m"],
            paper.params_m,
            "M",
            derived,
        ),
        r.row(
            "mult-adds, paper convention (+BN, ReLU)",
            counts["imagenet/macs_m"],
            paper.macs_m,
            "M",
            derived,
        ),
        r.row(
            "mult-adds, conv + linear only",
            counts["imagenet/macs_conv_linear_m"],
            None,
            "M",
            derived,
        ),
        *_cost_rows(r, found, paper.search_gpu_days, search),
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


def stability_block(p: Params, dataset: str) -> tuple[str, Any, dict[str, Any]]:
    """``search@<dataset>-<seed>`` over ``seeds``: agreement with the main seed's cell."""
    per_seed = {}
    for seed in p.seeds:
        o, stage = search_outs(dataset, seed), f"search@{dataset}-{seed}"
        genotype = load_genotype(upstream(REPO_ROOT / o["genotype"], stage))
        counts = paper_scale_counts(genotype, p.derive)
        values = {k: counts[k] for k in ("cifar10/params_m", "imagenet/macs_m")}
        metrics = _load(o["metrics"], stage)
        per_seed[seed] = (genotype, {k: metrics[k] for k in STABILITY_COLUMNS if k in metrics})
        per_seed[seed][1].update(values)
    return seed_stability(dataset, p.seed, per_seed)


def random_block(p: Params, dataset: str) -> tuple[str, Any, dict[str, Any]] | None:
    """The searched cell against the ``random:<seed>`` cells of ``train_<dataset>.cells``."""
    cells = getattr(p, f"train_{dataset}").cells
    randoms = [c for c in cells if c.startswith(RANDOM_PREFIX)]
    if SEARCHED not in cells or not randoms:
        return None

    def error(cell: str) -> float:
        return float(
            _load(train_outs(dataset, cell)["metrics"], f"train_{dataset}@{cell}")["test/top1_err"]
        )

    return searched_vs_random(dataset, error(SEARCHED), {c: error(c) for c in randoms})


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
    summary: dict[str, Any] = {"profile": p.profile, "data": manifest["source"], "tables": {}}
    for title, rows in tables.items():
        summary["tables"][title] = {
            r.what: {"ours": r.ours, "paper": r.paper, "paper_known": r.paper_known} for r in rows
        }
    blocks.append(("h2", "Searched cell against random cells (same recipe)"))
    for dataset in DATASETS:
        if (found := random_block(p, dataset)) is not None:
            blocks += [("p", found[0]), ("grid", found[1])]
            summary[f"searched_vs_random/{dataset}"] = found[2]
    blocks.append(("h2", "Cells"))
    for dataset in DATASETS:
        o = search_outs(dataset, p.seed)
        genotype = load_genotype(upstream(REPO_ROOT / o["genotype"], f"search@{dataset}-{p.seed}"))
        blocks.append(("p", f"{dataset}-searched cell: {_genotype_text(genotype.to_dict())}"))
        for kind in ("normal", "reduction"):
            rel = report_outs()[f"cell_{dataset}_{kind}"].relative_to("reports")
            blocks.append(("img", (str(rel), f"{dataset}-searched {kind} cell")))
    blocks.append(("h2", "Seed stability"))
    summary["seed_stability"] = {}
    for dataset in DATASETS:
        text, grid, summary["seed_stability"][dataset] = stability_block(p, dataset)
        blocks += [("p", text), ("grid", grid)]
    blocks.append(("h2", "K ablation (partial channels, method §2)"))
    per_k = {k: _load(search_k_outs(k)["metrics"], f"search_k@{k}") for k in p.k_values}
    main = f"search@cifar10-{p.seed}"  # the main search is the row of its own K
    per_k[p.search.cifar10.network.k] = _load(search_outs("cifar10", p.seed)["metrics"], main)
    grid, summary["k_ablation"] = k_ablation(per_k)
    blocks.append(
        (
            "p",
            f"The CIFAR-10 search at seed {p.seed} once per K (search_k@<K>; K = "
            f"{p.search.cifar10.network.k} is the main search, search@cifar10-{p.seed}).",
        )
    )
    blocks.append(("grid", grid))
    blocks += memory_k_blocks(summary)
    blocks.append(("h2", "Search dynamics"))
    for dataset in DATASETS:
        stage = f"search@{dataset}-{p.seed}"
        m = _load(search_outs(dataset, p.seed)["metrics"], stage)
        epochs = len(_load(search_outs(dataset, p.seed)["history"], stage))
        decided = {
            "epochs": epochs,
            "stable_since_epoch": int(m["search/stable_since_epoch"]),
            "stable_epochs": epochs - int(m["search/stable_since_epoch"]),
            "derivation_margin": m["search/derivation_margin"],
            "alpha_entropy_normalised": m["search/alpha_entropy_normalised"],
        }
        summary[f"search_decision/{dataset}"] = decided
        blocks.append(("p", _decision_text(dataset, decided)))
        figure = report_outs()[f"dynamics_{dataset}"]
        blocks.append(("img", (figure.name, f"{dataset} search dynamics")))
    blocks += search_health_blocks(p, summary)
    return blocks, summary


def searches(p: Params) -> dict[str, Path]:
    """Every search of the study, DVC stage name -> its history file: each dataset at every
    seed of ``seeds``, and the K ablation's searches."""
    found = {
        f"search@{dataset}-{seed}": search_outs(dataset, seed)["history"]
        for dataset in DATASETS
        for seed in p.seeds
    }
    found.update({f"search_k@{k}": search_k_outs(k)["history"] for k in p.k_values})
    return found


def search_figure(stage: str) -> Path:
    """The report's trajectories figure of the search ``stage`` (reports/searches/)."""
    return report_outs()["searches"] / f"{stage.replace('@', '_')}.png"


def search_health_blocks(p: Params, summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Per search: settled, collapsed or stopped (a table and a sentence), and its
    trajectories figure (issue 25)."""
    blocks: list[tuple[str, Any]] = [("h2", "Each search: settled, collapsed or stopped")]
    blocks.append(
        (
            "p",
            "Per search: every edge's softmaxed alphas (coloured) and edge weight (dashed), "
            "the derived cell's skip connections and parameter-free ops, the (op, input) "
            "pairs that changed since the epoch before and, when measured, the largest "
            "eigenvalue of the arch-split loss' Hessian (Zela et al., ICLR 2020). Grey: "
            f"{search_diagnostics.FROZEN}, when the cell cannot change; red: a stopping "
            "rule's epoch. Collapsed: half of the normal cell's pairs or more are "
            "parameter-free; settled: the cell held over the last quarter of the epochs "
            "that searched.",
        )
    )
    verdicts = {
        stage: search_diagnostics.verdict(_load(history, stage))
        for stage, history in searches(p).items()
    }
    blocks.append(("grid", search_diagnostics.table(verdicts)))
    for stage, verdict in verdicts.items():
        blocks.append(("p", search_diagnostics.sentence(stage, verdict)))
        figure = search_figure(stage).relative_to(report_outs()["searches"].parent)
        blocks.append(("img", (str(figure), f"{stage} trajectories")))
    summary["search_health"] = verdicts
    return blocks


def memory_k_blocks(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """The paper's memory claim beside ``make bench-memory``'s table, with its machine; a
    sentence saying how to measure it where this checkout has none."""
    blocks: list[tuple[str, Any]] = [("h2", "The memory claim (partial channels, method §2, §5)")]
    blocks.append(("p", memory_k.PAPER))
    path = REPO_ROOT / memory_k.MEMORY_K_FILE
    if not path.is_file():
        return [*blocks, ("p", memory_k.NOT_MEASURED)]
    table, measured_on, summary["memory_k"] = memory_k.load(path)
    return [*blocks, ("grid", table), ("p", measured_on)]


def _decision_text(dataset: str, d: dict[str, Any]) -> str:
    """Does the search decide? Its genotype's unchanged tail and smallest margin, plainly."""
    tail = d["stable_epochs"] / d["epochs"]
    verdict = (
        "it decided: the genotype held for the last quarter of the epochs or more"
        if tail >= 0.25
        else "it did not settle: the genotype changed within the last quarter of the epochs"
    )
    return (
        f"{dataset} search, {d['epochs']} epochs: genotype unchanged from epoch "
        f"{d['stable_since_epoch']} on ({d['stable_epochs']} of {d['epochs']} epochs); its "
        f"closest choice leads the runner-up by {d['derivation_margin']:.4f} in the derived "
        f"weight; alpha entropy {d['alpha_entropy_normalised']:.3f} of uniform. So {verdict}."
    )


def _genotype_text(genotype: dict[str, Any]) -> str:
    def cell(gene: list[list[Any]]) -> str:
        nodes = [gene[i : i + 2] for i in range(0, len(gene), 2)]
        return " | ".join(" + ".join(f"{op}({src})" for op, src in node) for node in nodes)

    return f"normal `{cell(genotype['normal'])}`; reduction `{cell(genotype['reduce'])}`"
