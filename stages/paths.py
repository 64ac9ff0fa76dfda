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


def search_outs(dataset: str) -> dict[str, Path]:
    d = Path("outputs/search") / dataset
    return {
        "genotype": d / "genotype.json",
        "history": d / "history.json",
        "supernet": d / "supernet.pt",
        "metrics": d / "metrics.json",
        "curves": d / "curves.json",
        "run": d / "mlflow_run.json",
    }


def derive_outs(dataset: str) -> dict[str, Path]:
    d = Path("outputs/derive") / dataset
    return {
        "normal": d / "normal.png",
        "reduction": d / "reduction.png",
        "counts": d / "counts.json",
        "run": d / "mlflow_run.json",
    }


def train_outs(dataset: str, cell: str | None = None) -> dict[str, Path]:
    """``train_cifar10`` (dataset cifar10) or ``train_imagenet@<cell>`` (the searched cell)."""
    d = (
        Path("outputs/train_cifar10")
        if dataset == "cifar10"
        else Path("outputs/train_imagenet") / (cell or dataset)
    )
    return {
        "model": d / "model.pt",
        "metrics": d / "metrics.json",
        "curves": d / "curves.json",
        "run": d / "mlflow_run.json",
    }
