"""Stage family `train_<dataset>@<cell>`: train a final network from a cell of `cells`.

    python -m stages.train cifar10 searched                 # the CIFAR-searched cell
    python -m stages.train cifar10 random:0                 # a random cell, the same recipe
    python -m stages.train imagenet searched:cifar10        # ImageNet, the CIFAR-searched cell

Writes the trained network (the detection stage's backbone), test error, and curves; registers
the network in MLflow's Model Registry, its cell as alias (pipeline/registry.py).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from pcdarts.train import Trainer
from pipeline.checkpoints import Resumable
from pipeline.config import REPO_ROOT, TrainParams, load_params
from pipeline.io import save_torch, to_jsonable, write_curves, write_json
from pipeline.launch import finish_processes, start_processes
from pipeline.paths import train_outs
from pipeline.registry import registration
from pipeline.stage import run_stage, runtime_record, tracked
from pipeline.train_setup import genotype_for, train_inputs

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes):
# its section but `cells`, the family's axis, so adding a cell retrains only that cell.
PARAMS = [
    "seed",
    "profile",
    "device",
    "dist",
    "runtime",
    "data.num_workers",
    "data.augment",
    *(f"train_{{dataset}}.{f.name}" for f in fields(TrainParams) if f.name != "cells"),
]


def outs(dataset: str, cell: str) -> dict[str, Path]:
    return train_outs(dataset, cell)


def main(dataset: str, cell: str) -> None:
    p = load_params()
    stage = f"train_{dataset}@{cell}"
    genotype, upstream_run = genotype_for(dataset, cell, p.seed)  # fails before any data
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    t = train_inputs(p, dataset, genotype)
    train_params: TrainParams = t.params
    o = {name: REPO_ROOT / path for name, path in outs(dataset, cell).items()}
    with tracked(
        p,
        stage,
        params=train_params,
        run_file=outs(dataset, cell)["run"],
        dataset=f"{dataset}:{cell}-cell",
        dataset_size=t.train_size,
        upstream_run_files=[upstream_run],
    ) as tracker:
        tracker.log_dict(genotype.to_dict(), "genotype.json")
        trainer = Trainer(t.model, train_params.loop, device, tracker)
        progress = Resumable(
            stage,
            {
                "params": train_params,
                "seed": p.seed,
                "genotype": genotype.to_dict(),
                "data": t.manifest,
            },
        )
        if (state := progress.load()) is not None:
            trainer.load_state_dict(state)
            print(f"resuming {stage} after epoch {trainer.epoch}")
        result = trainer.run(t.train_loader, t.test_loader, on_checkpoint=progress.saver())
        summary = {**result.metrics, **t.size, "profile": p.profile, "cost": result.cost.to_dict()}
        summary["runtime"] = runtime_record(p)
        write_json(o["metrics"], summary)
        write_curves(o["curves"], result.history)
        save_torch(
            o["model"],
            {
                "model": trainer.model.state_dict(),
                "genotype": genotype.to_dict(),
                "network": t.network,
                "params": to_jsonable(train_params),
            },
        )
        final = {**result.metrics, **t.size}
        tracker.log_summary(final)
        tracker.log_artifact(o["metrics"])
        example = np.zeros(
            (1, 3, train_params.image_size, train_params.image_size), dtype=np.float32
        )
        model_id = tracker.log_model(trainer.model.cpu().eval(), "model", input_example=example)
        tracker.register_model(  # in the Model Registry, by alias: pipeline/registry.py
            model_id, registration(p.tracking.experiment, dataset, cell, genotype.to_dict(), final)
        )
        progress.done()
    finish_processes(trainer.model)
    print(f"{stage}: test top-1 error {result.metrics['test/top1_err']:.2f}%")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:])
