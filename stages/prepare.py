"""Stage `prepare`: make (embedded) or locate (real) the datasets, check them, split them.

Writes ``data/prepared/``: ``manifest.json`` (where each dataset is and what it holds),
``splits/cifar10.json`` and ``splits/imagenet.json`` (the search's weight/arch index
files, seeded; never copies of images) and, for the embedded source, ``digits/`` with
the handwritten digits in the CIFAR-10, ImageNet and COCO layouts. Bad or missing data
fails here, before any training, with the path and what to do.
"""

from __future__ import annotations

import sys

from pipeline.config import REPO_ROOT, load_params
from pipeline.io import atomic_path, write_json
from pipeline.paths import PREPARED as OUT
from pipeline.paths import prepare_outs as outs
from pipeline.prepare_data import prepare
from pipeline.stage import run_stage, tracked

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = ["seed", "profile", "data", "prepare"]


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
    run_stage(main, *sys.argv[1:])
