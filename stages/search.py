"""Stage families `search@<dataset>-<seed>` and `search_k@<k>`: PC-DARTS architecture search.

    python -m stages.search cifar10 0       # search@cifar10-0: CIFAR-10 with seed 0
    python -m stages.search cifar10 0 2     # search_k@2: the same with partial-channel K=2

Writes ``outputs/search/<dataset>/seed_<seed>/`` (``outputs/search_k/k_<k>/``): the final
genotype, the per-epoch history (alphas, betas, genotype, metrics), the final supernet,
metrics and curves. Resumes an interrupted run of the same config from ``.checkpoints/``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pcdarts import create_model
from pcdarts.data.datasets import image_dataset
from pcdarts.data.loaders import make_loader
from pcdarts.data.splits import indices_from_json
from pcdarts.runtime import seed_everything
from pcdarts.search import Searcher
from pcdarts.supernet import Supernet
from pipeline.checkpoints import Resumable
from pipeline.config import REPO_ROOT, SearchParams, load_params, section
from pipeline.io import read_json, save_torch, to_jsonable, write_json
from pipeline.launch import finish_processes, per_process_batch, start_processes
from pipeline.paths import MANIFEST, prepare_outs, search_k_outs, search_outs, splits
from pipeline.stage import augment_kwargs, run_stage, tracked

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = [
    "profile",
    "device",
    "dist",
    "data.num_workers",
    "data.augment",
    "search.{dataset}",
]


def outs(dataset: str, seed: str, k: str | None = None) -> dict[str, Path]:
    return search_outs(dataset, seed) if k is None else search_k_outs(k)


def dvc_stage(dataset: str, seed: str, k: str | None = None) -> str:
    return f"search@{dataset}-{seed}" if k is None else f"search_k@{k}"


def main(dataset: str, seed_arg: str, k: str | None = None) -> None:
    p = load_params()
    sp: SearchParams = section(p, f"search.{dataset}")
    if k is not None:  # the K ablation: this search with one of `k_values` (checked at load)
        sp = replace(sp, network=replace(sp.network, k=int(k)))
    seed, stage = int(seed_arg), dvc_stage(dataset, seed_arg, k)
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    seed_everything(seed)
    manifest: dict[str, Any] = read_json(REPO_ROOT / MANIFEST, "prepare")
    root = REPO_ROOT / manifest["datasets"][dataset]["root"]
    train_set = image_dataset(
        dataset, root, train=True, augment=True, image_size=sp.image_size, **augment_kwargs(p)
    )
    weight_idx, arch_idx, _ = read_json(REPO_ROOT / splits(dataset), "prepare", indices_from_json)
    batch = per_process_batch(sp.batch_size, f"search.{dataset}.batch_size")
    loader_args: dict[str, Any] = {
        "batch_size": batch,
        "shuffle": True,
        "num_workers": p.data.num_workers,
    }
    weight_loader = make_loader(train_set, weight_idx, seed=seed, **loader_args)
    arch_loader = make_loader(train_set, arch_idx, seed=seed + 1, **loader_args)
    n_classes = len(manifest["datasets"][dataset]["classes"])
    model = create_model(
        f"pcdarts_supernet_{dataset}",
        C=sp.network.C,
        layers=sp.network.layers,
        num_classes=n_classes,
        k=sp.network.k,
        edge_norm=sp.network.edge_norm,
    )
    o = {k: REPO_ROOT / v for k, v in outs(dataset, seed_arg, k).items()}
    with tracked(
        p,
        stage,
        params=sp,
        seed=seed,
        run_file=outs(dataset, seed_arg, k)["run"],
        dataset=dataset,
        dataset_size=len(weight_idx) + len(arch_idx),
        upstream_run_files=[prepare_outs()["run"]],
    ) as tracker:
        assert isinstance(model, Supernet)  # the registry's name says so; mypy cannot
        searcher = Searcher(model, sp.loop, device, tracker)
        progress = Resumable(f"search-{dataset}", {"params": sp, "seed": seed, "data": manifest})
        if (state := progress.load()) is not None:
            searcher.load_state_dict(state)
            where = f"after epoch {searcher.epoch} from {progress.path}"
            print(f"resuming {stage} {where}")
        result = searcher.run(weight_loader, arch_loader, on_checkpoint=progress.saver())
        summary = {**result.metrics, "profile": p.profile, "cost": result.cost.to_dict()}
        write_json(o["genotype"], result.genotype.to_dict())
        write_json(o["history"], result.history)
        write_json(o["curves"], [{"epoch": h["epoch"], **h["metrics"]} for h in result.history])
        write_json(o["metrics"], summary)
        save_torch(
            o["supernet"],
            {
                "model": searcher.model.state_dict(),
                "genotype": result.genotype.to_dict(),
                "params": to_jsonable(sp),
            },
        )
        tracker.log_summary(result.metrics)
        for key in ("genotype", "history", "metrics", "supernet"):
            tracker.log_artifact(o[key])
        progress.done()
    finish_processes()
    print(f"{stage}: {result.genotype}")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:4])
