"""Stage family `train_<dataset>@<cell>`: train a final network from a cell of `cells`.

    python -m stages.train cifar10 searched                 # the CIFAR-searched cell
    python -m stages.train cifar10 random:0                 # a random cell, the same recipe
    python -m stages.train imagenet searched:cifar10        # ImageNet, the CIFAR-searched cell

Writes the trained network (the detection stage's backbone), test error, and curves.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from pcdarts import count_macs, count_params, create_model
from pcdarts.data.datasets import image_dataset
from pcdarts.data.loaders import make_loader
from pcdarts.genotypes import Genotype, load_genotype
from pcdarts.network import Network
from pcdarts.runtime import seed_everything
from pcdarts.train import Trainer
from pipeline.checkpoints import Resumable
from pipeline.config import REPO_ROOT, SEARCHED, TrainParams, load_params, section
from pipeline.io import read_json, save_torch, to_jsonable, upstream, write_json
from pipeline.launch import finish_processes, per_process_batch, start_processes
from pipeline.paths import MANIFEST, prepare_outs, search_outs, train_outs
from pipeline.stage import augment_kwargs, run_stage, tracked

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes):
# its section but `cells`, the family's axis, so adding a cell retrains only that cell.
PARAMS = [
    "seed",
    "profile",
    "device",
    "dist",
    "data.num_workers",
    "data.augment",
    *(f"train_{{dataset}}.{f.name}" for f in fields(TrainParams) if f.name != "cells"),
]


def outs(dataset: str, cell: str) -> dict[str, Path]:
    return train_outs(dataset, cell)


def genotype_for(dataset: str, cell: str, seed: int) -> tuple[Genotype, Path]:
    """The cell and the run file of what it came from: ``searched`` (``search@<dataset>-
    <seed>``'s genotype), ``searched:<other dataset>``, or through the one loader
    ``random:<seed>``, a registry name or a JSON file (relative to the repository)."""
    name, _, searched_on = cell.partition(":")
    if name == SEARCHED:
        found = search_outs(searched_on or dataset, seed)
        stage = f"search@{searched_on or dataset}-{seed}"
        return load_genotype(upstream(REPO_ROOT / found["genotype"], stage)), found["run"]
    return load_genotype(cell, root=REPO_ROOT), prepare_outs()["run"]


def main(dataset: str, cell: str) -> None:
    p = load_params()
    tp: TrainParams = section(p, f"train_{dataset}")
    stage = f"train_{dataset}@{cell}"
    genotype, upstream_run = genotype_for(dataset, cell, p.seed)  # fails before any data
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    seed_everything(p.seed)
    manifest: dict[str, Any] = read_json(REPO_ROOT / MANIFEST, "prepare")
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
    loaders: dict[str, Any] = {"seed": p.seed, "num_workers": p.data.num_workers}
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
    assert isinstance(model, Network)  # the registry's name says so; mypy cannot
    net_args = {"dataset": dataset, **shape}
    size = {
        "model/params_m": count_params(model),
        "model/macs_m": count_macs(model, tp.image_size),
        "model/macs_conv_linear_m": count_macs(model, tp.image_size, "conv_linear"),
    }
    o = {k: REPO_ROOT / v for k, v in outs(dataset, cell).items()}
    with tracked(
        p,
        stage,
        params=tp,
        run_file=outs(dataset, cell)["run"],
        dataset=f"{dataset}:{cell}-cell",
        dataset_size=len(train_set),  # type: ignore[arg-type]
        upstream_run_files=[upstream_run],
    ) as tracker:
        tracker.log_dict(genotype.to_dict(), "genotype.json")
        trainer = Trainer(model, tp.loop, device, tracker)
        progress = Resumable(
            stage,
            {"params": tp, "seed": p.seed, "genotype": genotype.to_dict(), "data": manifest},
        )
        if (state := progress.load()) is not None:
            trainer.load_state_dict(state)
            print(f"resuming {stage} after epoch {trainer.epoch}")
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
    print(f"{stage}: test top-1 error {result.metrics['test/top1_err']:.2f}%")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:3])
