"""Stage `search@<dataset>`: PC-DARTS architecture search on CIFAR-10 or ImageNet.

    python -m stages.search cifar10

Writes ``outputs/search/<dataset>/``: the final genotype, the per-epoch history (alphas,
betas, genotype, metrics), the final supernet, metrics and curves. Resumes an
interrupted run of the same config from ``.checkpoints/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pcdarts import create_model
from pcdarts.data.datasets import image_dataset
from pcdarts.data.loaders import make_loader
from pcdarts.data.splits import indices_from_json
from pcdarts.runtime import seed_everything
from pcdarts.search import Searcher
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
    write_json,
)
from stages.config import REPO_ROOT, load_params, section
from stages.paths import MANIFEST, prepare_outs, splits
from stages.paths import search_outs as outs

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = [
    "seed",
    "profile",
    "device",
    "dist",
    "data.num_workers",
    "data.augment",
    "search.{dataset}",
]


def params(dataset: str, seed: str | None = None) -> list[str]:
    """PARAMS of ``search@<dataset>``; a seeded search (``search_seed``) takes its seed as an
    argument and reads ``seeds`` only through dvc.yaml's matrix."""
    keys = [k.format(dataset=dataset) for k in PARAMS]
    return keys if seed is None else [k for k in keys if k != "seed"]


def dvc_stage(dataset: str, seed: int | None) -> str:
    return f"search@{dataset}" if seed is None else f"search_seed@{dataset}-{seed}"


def main(dataset: str, seed_arg: str | None = None) -> None:
    p = load_params()
    sp = section(p, f"search.{dataset}")
    seed = p.seed if seed_arg is None else int(seed_arg)
    extra = None if seed_arg is None else seed
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    seed_everything(seed)
    manifest = read_json(REPO_ROOT / MANIFEST, "prepare")
    root = REPO_ROOT / manifest["datasets"][dataset]["root"]
    train_set = image_dataset(
        dataset, root, train=True, augment=True, image_size=sp.image_size, **augment_kwargs(p)
    )
    weight_idx, arch_idx, _ = read_json(REPO_ROOT / splits(dataset), "prepare", indices_from_json)
    batch = per_process_batch(sp.batch_size, f"search.{dataset}.batch_size")
    loader_args = {"batch_size": batch, "shuffle": True, "num_workers": p.data.num_workers}
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
    o = {k: REPO_ROOT / v for k, v in outs(dataset, extra).items()}
    with tracked(
        p,
        dvc_stage(dataset, extra),
        params=sp,
        seed=seed,
        run_file=outs(dataset, extra)["run"],
        dataset=dataset,
        dataset_size=len(weight_idx) + len(arch_idx),
        upstream_run_files=[prepare_outs()["run"]],
    ) as tracker:
        searcher = Searcher(model, sp.loop, device, tracker)
        progress = Resumable(f"search-{dataset}", {"params": sp, "seed": seed, "data": manifest})
        if (state := progress.load()) is not None:
            searcher.load_state_dict(state)
            where = f"after epoch {searcher.epoch} from {progress.path}"
            print(f"resuming {dvc_stage(dataset, extra)} {where}")
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
    print(f"{dvc_stage(dataset, extra)}: {result.genotype}")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:3])
