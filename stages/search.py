"""Stage families `search@<dataset>-<seed>` and `search_k@<k>`: PC-DARTS architecture search.

    python -m stages.search cifar10 0       # search@cifar10-0: CIFAR-10 with seed 0
    python -m stages.search cifar10 0 2     # search_k@2: the same with partial-channel K=2

Writes ``outputs/search/<dataset>/seed_<seed>/`` (``outputs/search_k/k_<k>/``): the final
genotype, the per-epoch history (alphas, betas, genotype, metrics, diagnostics), the final
supernet, metrics, curves and the alpha / edge-weight / eigenvalue trajectories. Resumes an
interrupted run of the same config from ``.checkpoints/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pcdarts.diagnostics import trajectory_rows
from pcdarts.search import Searcher
from pipeline.checkpoints import Resumable
from pipeline.config import REPO_ROOT, load_params, section
from pipeline.io import save_torch, to_jsonable, write_curves, write_json
from pipeline.launch import finish_processes, start_processes
from pipeline.paths import prepare_outs, search_k_outs, search_outs
from pipeline.search_setup import search_inputs
from pipeline.stage import int_argument, run_stage, runtime_record, tracked

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = [
    "profile",
    "device",
    "dist",
    "runtime",
    "data.num_workers",
    "data.augment",
    "search.{dataset}",
]


def outs(dataset: str, seed: str, k: str | None = None) -> dict[str, Path]:
    return search_outs(dataset, seed) if k is None else search_k_outs(k)


def dvc_stage(dataset: str, seed: str, k: str | None = None) -> str:
    return f"search@{dataset}-{seed}" if k is None else f"search_k@{k}"


def main(dataset: str, seed: str, k: str | None = None) -> None:
    seed_value = int_argument(seed, "seed")
    k_value = None if k is None else int_argument(k, "k")
    p = load_params()
    stage = dvc_stage(dataset, seed, k)
    section(p, f"search.{dataset}")  # a mistyped dataset fails before any process starts
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    s = search_inputs(p, dataset, seed_value, k_value)
    sp, model, manifest = s.params, s.model, s.manifest
    o = {name: REPO_ROOT / path for name, path in outs(dataset, seed, k).items()}
    with tracked(
        p,
        stage,
        params=sp,
        seed=seed_value,
        run_file=outs(dataset, seed, k)["run"],
        dataset=dataset,
        dataset_size=s.dataset_size,
        upstream_run_files=[prepare_outs()["run"]],
    ) as tracker:
        searcher = Searcher(model, sp.loop, device, tracker, seed=seed_value)
        progress = Resumable(
            f"search-{dataset}", {"params": sp, "seed": seed_value, "data": manifest}
        )
        if (state := progress.load()) is not None:
            searcher.load_state_dict(state)
            where = f"after epoch {searcher.epoch} from {progress.path}"
            print(f"resuming {stage} {where}")
        result = searcher.run(s.weight_loader, s.arch_loader, on_checkpoint=progress.saver())
        summary = {**result.metrics, "profile": p.profile, "cost": result.cost.to_dict()}
        summary["runtime"] = runtime_record(p)
        summary["stop"] = result.stop  # the stopping rule that ended it (null: none did)
        write_json(o["genotype"], result.genotype.to_dict())
        write_json(o["history"], result.history)
        write_curves(o["curves"], [{"epoch": h["epoch"], **h["metrics"]} for h in result.history])
        write_json(o["trajectories"], [r for h in result.history for r in trajectory_rows(h)])
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
        for key in ("genotype", "history", "metrics", "supernet", "trajectories"):
            tracker.log_artifact(o[key])
        progress.done()
    finish_processes(searcher.model)
    print(f"{stage}: {result.genotype}")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:])
