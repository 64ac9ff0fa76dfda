"""Stage `prepare`: make (embedded) or locate (real) the datasets, check them, split them.

Writes ``data/prepared/``: ``manifest.json`` (where each dataset is and what it holds),
``splits/cifar10.json`` and ``splits/imagenet.json`` (the search's weight/arch index
files, seeded; never copies of images) and, for the embedded source, ``digits/`` with
the handwritten digits in the CIFAR-10, ImageNet and COCO layouts. Bad or missing data
fails here, before any training, with the path and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pcdarts.data.cifar import check_cifar10, load_cifar10
from pcdarts.data.coco import check_coco
from pcdarts.data.imagenet import check_imagenet, load_imagenet
from pcdarts.data.splits import indices_to_json, split_per_class, split_weight_arch
from pipeline.config import REPO_ROOT, Params, load_params
from pipeline.embedded_data import write_all
from pipeline.io import atomic_path, write_json
from pipeline.paths import PREPARED as OUT
from pipeline.paths import prepare_outs as outs
from pipeline.stage import run_stage, tracked

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = ["seed", "profile", "data", "prepare"]


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


def main() -> None:
    p = load_params()
    target = REPO_ROOT / OUT
    tracked_params = {"data": p.data, "splits": p.prepare}
    with tracked(p, "prepare", params=tracked_params, run_file=outs()["run"]) as tracker:
        # Built in a sibling folder and swapped in: an interrupted run leaves no half dataset.
        with atomic_path(target, directory=True) as staging:
            manifest = prepare(p, staging, OUT)
            write_json(staging / "manifest.json", manifest)
        sizes = {
            f"data/{name}/{key}": float(value)
            for name, info in manifest["datasets"].items()
            for key, value in info.items()
            if key.endswith("_images") and isinstance(value, int)
        }
        tracker.log_summary(sizes)
        tracker.log_artifact(target / "manifest.json")
    counts = {k: v.get("train_images") for k, v in manifest["datasets"].items()}
    print(f"prepared {p.data.source} data in {OUT}: train images {counts}")
    imagenet, coco = manifest["datasets"]["imagenet"], manifest["datasets"]["coco"]
    decoded = [
        f"ImageNet {imagenet[f'{s}_decoded']} of {imagenet[f'{s}_images']} {s}"
        for s in ("train", "val")
    ] + [f"COCO {coco[s]['decoded']} of {coco[s]['images']} {s}" for s in ("train2017", "val2017")]
    print(f"decoded (seed {p.seed}): {', '.join(decoded)}")


if __name__ == "__main__":
    run_stage(main)
