"""Stage `transfer_ssd`: SSD on COCO with the ImageNet-retrained PC-DARTS backbone (method §7).

    python -m stages.transfer_ssd

With ``dist.nproc_per_node`` > 1 it re-runs itself under torchrun and MMEngine's ``pytorch``
launcher takes over (DDP, sharded loaders); ``transfer_ssd.batch_size`` stays the global batch.
Converts ``train_imagenet@searched``'s network into MMDetection backbone weights, trains
the SSD of ``transfer_ssd.config`` with MMEngine's Runner (resuming from
.checkpoints/transfer_ssd/<config hash>/), evaluates on val2017 with CocoMetric and
writes AP, AP50, AP75 and AP by size, the detector and its resolved config.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any

from detection.checkpoint import convert_imagenet_checkpoint
from detection.configs import config_file
from detection.transfer import BackboneInit, CocoData, Schedule, build_config, train_and_evaluate
from pcdarts.distributed import barrier, is_main
from pipeline.checkpoints import CHECKPOINT_DIR, config_hash
from pipeline.config import REPO_ROOT, SEARCHED, TransferParams, load_params
from pipeline.io import atomic_path, read_json, read_torch, save_torch, write_curves, write_json
from pipeline.launch import finish_processes, per_process_batch, start_processes
from pipeline.paths import MANIFEST, train_outs
from pipeline.paths import transfer_outs as outs
from pipeline.stage import run_stage, runtime_record, tracked

# The params.yaml keys this stage reads (dvc.yaml lists the same; `tracking` only observes).
PARAMS = ["seed", "profile", "device", "dist", "runtime", "data.num_workers", "transfer_ssd"]
STAGE = "transfer_ssd"
BACKBONE_STAGE = f"train_imagenet@{SEARCHED}"  # writes the ImageNet network converted here


def main() -> None:
    p = load_params()
    transfer_params: TransferParams = p.transfer_ssd
    device = start_processes(p, f"stages.{Path(__file__).stem}", sys.argv[1:])
    imagenet_file = REPO_ROOT / train_outs("imagenet", SEARCHED)["model"]
    weights = read_torch(imagenet_file, BACKBONE_STAGE, convert_imagenet_checkpoint)
    manifest: dict[str, Any] = read_json(REPO_ROOT / MANIFEST, "prepare")
    coco = manifest["datasets"]["coco"]
    data = CocoData(REPO_ROOT / coco["root"], tuple(coco["categories"]))
    digest = hashlib.sha256(imagenet_file.read_bytes()).hexdigest()
    work_dir = CHECKPOINT_DIR / STAGE / config_hash([transfer_params, p.seed, coco, digest])
    backbone_file = work_dir / "backbone.pth"
    save_torch(backbone_file, weights)  # rank 0 writes, every rank reads it
    barrier()
    meta = weights["meta"]
    backbone = BackboneInit(
        meta["genotype"],
        meta["C"],
        meta["layers"],
        backbone_file if transfer_params.pretrained else None,
    )
    batch = per_process_batch(transfer_params.batch_size, "transfer_ssd.batch_size")
    schedule = Schedule(
        transfer_params.epochs,
        batch,
        transfer_params.lr,
        transfer_params.val_interval,
        transfer_params.log_interval,
        p.data.num_workers,
    )
    cfg = build_config(config_file(transfer_params.config), data, schedule, backbone, p.seed)
    o = {name: REPO_ROOT / path for name, path in outs().items()}
    with tracked(
        p,
        STAGE,
        params=transfer_params,
        run_file=outs()["run"],
        dataset=f"coco:{coco['root']}",
        dataset_size=coco["train2017"]["images"],
        upstream_run_files=[train_outs("imagenet", SEARCHED)["run"]],
    ) as tracker:
        tracker.log_dict(meta["genotype"], "genotype.json")
        result = train_and_evaluate(cfg, work_dir, tracker.log_metrics, device)
        summary = {
            **result.metrics,
            "pretrained": transfer_params.pretrained,
            "profile": p.profile,
            "cost": result.cost.to_dict(),
            "runtime": runtime_record(p),
        }
        write_json(o["metrics"], summary)
        write_curves(o["curves"], result.history)
        save_torch(o["model"], result.checkpoint)
        if is_main():
            with atomic_path(o["config"]) as tmp:
                tmp.write_text(cfg.pretty_text)
        tracker.log_summary({**result.metrics, **result.cost.metrics()})
        for name in ("metrics", "config"):
            tracker.log_artifact(o[name])
    barrier()  # every rank is done with the work folder
    if is_main():
        shutil.rmtree(work_dir, ignore_errors=True)  # done: nothing left to resume
        print(
            f"{STAGE}: bbox AP {result.metrics['coco/bbox_mAP']:.3f}, AP50 "
            f"{result.metrics['coco/bbox_mAP_50']:.3f}"
        )
    finish_processes()


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:])
