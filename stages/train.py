"""Stages `train_cifar10` and `train_imagenet@<cell>`: train a final network from a genotype.

    python -m stages.train cifar10            # CIFAR-10 evaluation of the CIFAR-searched cell
    python -m stages.train imagenet cifar10   # ImageNet retraining of the CIFAR-searched cell
    python -m stages.train imagenet imagenet  # ... of the ImageNet-searched cell

Writes the trained network (the detection stage's backbone), test error, and curves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pcdarts import count_macs, count_params, create_model
from pcdarts.data.datasets import image_dataset
from pcdarts.data.loaders import make_loader
from pcdarts.genotypes import Genotype, load_genotype
from pcdarts.runtime import seed_everything
from pcdarts.train import Trainer
from stages.common import (
    Resumable,
    augment_kwargs,
    finish_processes,
    per_process_batch,
    read_json,
    run_stage,
    save_torch,
    start_processes,
    to_jsonable,
    tracked,
    upstream,
    write_json,
)
from stages.config import REPO_ROOT, SEARCHED, TrainParams, load_params, section
from stages.paths import MANIFEST, prepare_outs, search_outs
from stages.paths import train_outs as outs

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = [
    "seed",
    "profile",
    "device",
    "dist",
    "data.num_workers",
    "data.augment",
    "train_{dataset}",
]


def stage_name(dataset: str, cell: str) -> str:
    return "train_cifar10" if dataset == "cifar10" else f"train_imagenet@{cell}"


def genotype_for(tp: TrainParams, cell: str) -> Genotype:
    """``"searched"`` (``search@<cell>``'s output), a registry name or a JSON file (relative
    to the repository), through the one loader."""
    if tp.genotype == SEARCHED:
        return load_genotype(upstream(REPO_ROOT / search_outs(cell)["genotype"], f"search@{cell}"))
    return load_genotype(tp.genotype, root=REPO_ROOT)


def main(dataset: str, cell: str | None = None) -> None:
    cell = cell or dataset
    p = load_params()
    tp: TrainParams = section(p, f"train_{dataset}")
    genotype = genotype_for(tp, cell)  # a bad genotype fails before any data is read
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    seed_everything(p.seed)
    manifest = read_json(REPO_ROOT / MANIFEST, "prepare")
    root = REPO_ROOT / manifest["datasets"][dataset]["root"]
    kw = {
        "image_size": tp.image_size,
        "cutout_length": tp.cutout_length,
        "color_jitter": tp.color_jitter,
        **augment_kwargs(p),
    }
    train_set = image_dataset(dataset, root, train=True, augment=True, **kw)
    test_set = image_dataset(dataset, root, train=False, augment=False, **kw)
    batch = per_process_batch(tp.batch_size, f"train_{dataset}.batch_size")
    loaders = {"seed": p.seed, "num_workers": p.data.num_workers}
    train_loader = make_loader(train_set, None, batch, shuffle=True, **loaders)
    test_loader = make_loader(test_set, None, batch, shuffle=False, **loaders)
    n_classes = len(manifest["datasets"][dataset]["classes"])
    shape = {
        "C": tp.network.C,
        "layers": tp.network.layers,
        "num_classes": n_classes,
        "auxiliary": tp.network.auxiliary,
    }
    model = create_model(f"pcdarts_{dataset}", genotype=genotype, **shape)
    net_args = {"dataset": dataset, **shape}
    size = {
        "model/params_m": count_params(model),
        "model/macs_m": count_macs(model, tp.image_size),
        "model/macs_conv_linear_m": count_macs(model, tp.image_size, "conv_linear"),
    }
    o = {k: REPO_ROOT / v for k, v in outs(dataset, cell).items()}
    upstream_runs = (
        [search_outs(cell)["run"]] if tp.genotype == SEARCHED else [prepare_outs()["run"]]
    )
    with tracked(
        p,
        stage_name(dataset, cell),
        params=tp,
        run_file=outs(dataset, cell)["run"],
        dataset=f"{dataset}:{cell}-cell",
        dataset_size=len(train_set),
        upstream_run_files=upstream_runs,
    ) as tracker:
        tracker.log_dict(genotype.to_dict(), "genotype.json")
        trainer = Trainer(model, tp.loop, device, tracker)
        progress = Resumable(
            stage_name(dataset, cell),
            {"params": tp, "seed": p.seed, "genotype": genotype.to_dict(), "data": manifest},
        )
        if (state := progress.load()) is not None:
            trainer.load_state_dict(state)
            print(f"resuming {stage_name(dataset, cell)} after epoch {trainer.epoch}")
        result = trainer.run(train_loader, test_loader, on_checkpoint=progress.saver())
        summary = {**result.metrics, **size, "profile": p.profile, "cost": result.cost.to_dict()}
        write_json(o["metrics"], summary)
        write_json(o["curves"], result.history)
        save_torch(
            o["model"],
            {
                "model": trainer.model.state_dict(),
                "genotype": genotype.to_dict(),
                "network": net_args,
                "params": to_jsonable(tp),
            },
        )
        tracker.log_summary({**result.metrics, **size})
        tracker.log_artifact(o["metrics"])
        example = np.zeros((1, 3, tp.image_size, tp.image_size), dtype=np.float32)
        tracker.log_model(trainer.model.cpu().eval(), "model", input_example=example)
        progress.done()
    finish_processes()
    print(f"{stage_name(dataset, cell)}: test top-1 error {result.metrics['test/top1_err']:.2f}%")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:3])
