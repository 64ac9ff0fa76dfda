"""Where each stage writes: the single source of the paths dvc.yaml declares.

Stages import their own ``outs`` from here and read upstream outputs through the
upstream's function, so no stage imports another stage's code.
"""

from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
MANIFEST = PREPARED / "manifest.json"


def splits(dataset: str) -> Path:
    """The search's weight/arch index file of ``dataset`` (written by ``prepare``)."""
    return PREPARED / "splits" / f"{dataset}.json"


def prepare_outs() -> dict[str, Path]:
    return {"data": PREPARED, "run": Path("outputs/prepare/mlflow_run.json")}


def _search_files(d: Path) -> dict[str, Path]:
    return {
        "genotype": d / "genotype.json",
        "history": d / "history.json",
        "supernet": d / "supernet.pt",
        "metrics": d / "metrics.json",
        "curves": d / "curves.json",
        # per epoch, long form: every edge's softmaxed alphas and edge weight, the eigenvalue
        "trajectories": d / "trajectories.json",
        "run": d / "mlflow_run.json",
    }


def search_outs(dataset: str, seed: int | str) -> dict[str, Path]:
    """``search@<dataset>-<seed>``: the search of ``dataset`` with ``seed``."""
    return _search_files(Path("outputs/search") / dataset / f"seed_{seed}")


def search_k_outs(k: int | str) -> dict[str, Path]:
    """``search_k@<k>``: the K ablation's CIFAR-10 search with partial-channel K = ``k``."""
    return _search_files(Path("outputs/search_k") / f"k_{k}")


def derive_outs(dataset: str) -> dict[str, Path]:
    d = Path("outputs/derive") / dataset
    return {
        "normal": d / "normal.png",
        "reduction": d / "reduction.png",
        "counts": d / "counts.json",
        "run": d / "mlflow_run.json",
    }


def train_outs(dataset: str, cell: str) -> dict[str, Path]:
    """``train_<dataset>@<cell>``: the final network of ``dataset`` built from ``cell``."""
    d = Path(f"outputs/train_{dataset}") / cell
    return {
        "model": d / "model.pt",
        "metrics": d / "metrics.json",
        "curves": d / "curves.json",
        "run": d / "mlflow_run.json",
    }


def transfer_outs() -> dict[str, Path]:
    """``transfer_ssd``: SSD on COCO with the ImageNet-searched backbone (method §7)."""
    d = Path("outputs/transfer_ssd")
    return {
        "model": d / "model.pth",  # the detector, MMDetection's checkpoint layout
        "config": d / "config.py",  # the resolved MMDetection config it was trained with
        "metrics": d / "metrics.json",
        "curves": d / "curves.json",
        "run": d / "mlflow_run.json",
    }


def report_outs() -> dict[str, Path]:
    d = Path("reports")
    return {
        "markdown": d / "results.md",
        "html": d / "results.html",
        "summary": d / "summary.json",
        "dynamics_cifar10": d / "search_dynamics_cifar10.png",
        "dynamics_imagenet": d / "search_dynamics_imagenet.png",
        "searches": d / "searches",  # a trajectories figure per search (reporting/results.py)
        **{
            f"cell_{dataset}_{kind}": d / "cells" / f"{dataset}_{kind}.png"
            for dataset in ("cifar10", "imagenet")
            for kind in ("normal", "reduction")
        },
        "run": Path("outputs/report/mlflow_run.json"),
    }
