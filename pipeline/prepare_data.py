"""The ``prepare`` stage's work: make (embedded) or locate (real) the datasets, check them,
and write the search splits, into a folder the stage then swaps in whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcdarts.data.cifar import check_cifar10, load_cifar10
from pcdarts.data.coco import check_coco
from pcdarts.data.imagenet import check_imagenet, load_imagenet
from pcdarts.data.splits import indices_to_json, split_per_class, split_weight_arch
from pipeline.config import Params
from pipeline.embedded_data import write_all


def dataset_roots(p: Params, out: Path) -> dict[str, Path]:
    if p.data.source == "embedded":
        return {name: out / "digits" / name for name in ("cifar10", "imagenet", "coco")}
    return {
        "cifar10": Path(p.data.cifar10_root),
        "imagenet": Path(p.data.imagenet_root),
        "coco": Path(p.data.coco_root),
    }


def prepare(p: Params, out: Path, final: Path) -> dict[str, Any]:
    """Write everything into ``out`` (a fresh folder, later renamed ``final``); the manifest."""
    roots = dataset_roots(p, out)
    if p.data.source == "embedded":
        e = p.data.embedded
        write_all(
            out / "digits",
            seed=p.seed,
            test_fraction=e.test_fraction,
            imagenet_size=e.imagenet_size,
            coco_canvas_size=e.coco_canvas_size,
            coco_images_train=e.coco_images_train,
            coco_images_val=e.coco_images_val,
            imagenet_classes=e.imagenet_classes,
            imagenet_per_class=(e.imagenet_train_per_class, e.imagenet_val_per_class),
            coco_categories=e.coco_categories,
        )
    elif p.data.download_cifar10:
        import torchvision  # noqa: PLC0415 - only when the user allowed a download

        torchvision.datasets.CIFAR10(str(roots["cifar10"]), train=True, download=True)
    decode = {
        "decode_images": p.data.decode_images,
        "seed": p.seed,
        "workers": max(1, p.data.num_workers),
    }
    summaries = {
        "cifar10": check_cifar10(roots["cifar10"]),
        "imagenet": check_imagenet(roots["imagenet"], **decode),
        "coco": check_coco(roots["coco"], **decode),
    }
    s = p.prepare
    n_cifar = len(load_cifar10(roots["cifar10"], train=True))
    w, a = split_weight_arch(n_cifar, s.cifar10.arch_fraction, seed=p.seed)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    (out / "splits" / "cifar10.json").write_text(
        indices_to_json(w, a, {"dataset": "cifar10", "seed": p.seed})
    )
    targets = load_imagenet(roots["imagenet"], "train").targets
    w, a = split_per_class(
        targets, s.imagenet.weight_fraction, s.imagenet.arch_fraction_per_class, seed=p.seed
    )
    (out / "splits" / "imagenet.json").write_text(
        indices_to_json(w, a, {"dataset": "imagenet", "seed": p.seed})
    )
    return {
        "profile": p.profile,
        "source": p.data.source,
        "datasets": {
            name: {**summaries[name], "root": str(root)}
            for name, root in dataset_roots(p, final).items()
        },
    }
