"""Each stage's dry run: the stage's own set-up under the dry run's scratch root, a few steps
of each of its loops (``pcdarts.profiling``), and the forecast of the full stage.

One function per stage family, run by :mod:`pipeline.dry_run` in a fresh process each (so a
CPU's resident-set peak is that stage's, and a stage the operating system kills for memory
takes nothing else with it). Each reads exactly what the stage reads, rooted at the scratch
workspace instead of the repository (``root``: the ``prepare`` output, the upstream outputs
a downstream stage reads), builds its inputs through the stage's set-up (``prepare``,
``search_inputs``, ``train_inputs``, the SSD config of ``build_config``) and its loop
through the library (``Searcher``, ``Trainer``, MMEngine's Runner), and writes only under
``root``: the prepared data and index files, the dry-run genotype of a search and network of
a training that a downstream stage reads, MMEngine's work folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pcdarts.profiling import (
    REAL_IMAGES,
    Forecast,
    LoopMeasurement,
    MemoryMeter,
    evaluations,
    forecast,
    measure_loop,
    scaling_assumption,
    search_phases,
    search_schedule,
    steps_per_epoch,
    train_phases,
    train_schedule,
)
from pcdarts.search import Searcher
from pcdarts.train import Trainer
from pipeline.config import SEARCHED, Params
from pipeline.io import atomic_path, read_json, save_torch, upstream, write_json
from pipeline.paths import MANIFEST, PREPARED, search_k_outs, search_outs, train_outs
from pipeline.prepare_data import prepare
from pipeline.search_setup import search_inputs
from pipeline.train_setup import genotype_for, train_inputs


@dataclass(frozen=True)
class Budget:
    """How a dry run measures: per loop phase ``warmup`` untimed and ``steps`` timed steps;
    batches whose predicted peak exceeds ``memory_mb`` are extrapolated."""

    warmup: int
    steps: int
    memory_mb: float


@dataclass(frozen=True)
class Context:
    p: Params
    root: Path  # the scratch workspace: prepare's output and the upstream outputs live here
    device: torch.device
    meter: MemoryMeter
    budget: Budget

    @property
    def world(self) -> int:
        """The processes the config runs the stage on (the dry run runs one of them)."""
        return self.p.dist.nproc_per_node * self.p.dist.nnodes

    def batch(self, global_batch: int) -> int:
        """The per-process batch (param_rules refused a batch the world does not divide)."""
        return global_batch // self.world

    def measure(self, phases: Any, batch: int) -> LoopMeasurement:
        b = self.budget
        return measure_loop(
            phases,
            batch,
            warmup=b.warmup,
            steps=b.steps,
            budget_mb=b.memory_mb,
            meter=self.meter,
            device=self.device,
        )


def _manifest(ctx: Context) -> dict[str, Any]:
    return read_json(ctx.root / MANIFEST, "prepare")


def _real_ratio(ctx: Context, dataset: str) -> tuple[float, float]:
    """(train, eval) images of the real dataset over those of the configured data."""
    info = _manifest(ctx)["datasets"][dataset]
    if dataset == "coco":
        here = (info["train2017"]["images"], info["val2017"]["images"])
    else:
        here = (info["train_images"], info.get("test_images", info.get("val_images", 0)))
    real = REAL_IMAGES[dataset]
    return real[0] / here[0], real[1] / here[1]


def _row(
    ctx: Context,
    m: LoopMeasurement,
    steps: tuple[dict[str, int], dict[str, int]],
    epochs: dict[str, int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A stage's row: its measurement and the forecast of its steps (on the configured data,
    and with the real dataset's image counts)."""
    here, real = steps
    done = m.status != "does not fit"
    return {
        "world": ctx.world,
        "per_process_batch": m.batch,
        "measurement": m.to_dict(),
        "epochs": epochs,
        "forecast": forecast(m.seconds, here, ctx.world).to_dict() if done else None,
        "forecast_real_size": forecast(m.seconds, real, ctx.world).to_dict() if done else None,
        "scaling": scaling_assumption(ctx.world),
        **extra,
    }


# --------------------------------------------------------------------------- prepare


def dry_prepare(ctx: Context) -> dict[str, Any]:
    """``prepare`` in full (its checks are its cost): the data written or located and checked,
    the search splits' index files, into ``root``/data/prepared."""
    p = ctx.p
    start = time.perf_counter()
    target = ctx.root / PREPARED
    with atomic_path(target, directory=True) as staging:
        manifest = prepare(p, staging, PREPARED)
        write_json(staging / "manifest.json", manifest)
    seconds = time.perf_counter() - start
    peak = ctx.meter.peak_mb()
    result = Forecast(seconds, 1)
    sizes = {name: _sizes(info) for name, info in manifest["datasets"].items()}
    return {
        "world": 1,
        "per_process_batch": None,
        "measurement": {"status": "measured", "peak_memory_mb": peak, "note": "run in full"},
        "forecast": result.to_dict(),
        "forecast_real_size": None,
        "scaling": "one process, run in full (its checks are the stage's cost)",
        "data": sizes,
    }


def _sizes(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("train_images", "test_images", "val_images", "train2017", "val2017")
    out = {k: info[k] for k in keep if k in info}
    out["classes"] = len(info.get("classes", info.get("categories", [])))
    return out


# --------------------------------------------------------------------------- search


def dry_search(ctx: Context, dataset: str, seed: int, k: int | None) -> dict[str, Any]:
    """A search's steps (warm-up, arch + weight, evaluation) at its per-process batch; writes
    the supernet's derived genotype where the trainings of ``searched`` cells read it."""
    s = search_inputs(ctx.p, dataset, seed, k, root=ctx.root)
    outs = search_outs(dataset, seed) if k is None else search_k_outs(k)
    write_json(ctx.root / outs["genotype"], s.model.genotype().to_dict())  # before any step
    searcher = Searcher(s.model, s.params.loop, ctx.device, show_progress=False)
    batch = ctx.batch(s.params.batch_size)
    m = ctx.measure(search_phases(searcher, s.weight_loader, s.arch_loader), batch)
    write_json(ctx.root / outs["genotype"], s.model.genotype().to_dict())
    n_weight, n_arch = len(s.weight_loader.sampler), len(s.arch_loader.sampler)  # type: ignore[arg-type]
    train_ratio, _ = _real_ratio(ctx, dataset)
    loop = s.params.loop
    steps = (
        search_schedule(loop, n_weight, n_arch, batch, ctx.world),
        search_schedule(
            loop, round(n_weight * train_ratio), round(n_arch * train_ratio), batch, ctx.world
        ),
    )
    net = s.params.network
    shape = {"C": net.C, "layers": net.layers, "k": net.k, "image_size": s.params.image_size}
    extra = {"network": shape, "data": {"weight_split": n_weight, "arch_split": n_arch}}
    epochs = {"epochs": loop.epochs, "warmup_epochs": loop.warmup_epochs}
    return _row(ctx, m, steps, epochs, extra)


# --------------------------------------------------------------------------- train


def dry_train(ctx: Context, dataset: str, cell: str) -> dict[str, Any]:
    """A training's steps (training at mid-run, evaluation) at its per-process batch; saves
    the network as the stage does, where ``transfer_ssd`` reads its backbone."""
    genotype, _ = genotype_for(dataset, cell, ctx.p.seed, root=ctx.root)
    t = train_inputs(ctx.p, dataset, genotype, root=ctx.root)
    trainer = Trainer(t.model, t.params.loop, ctx.device, show_progress=False)
    batch = ctx.batch(t.params.batch_size)
    m = ctx.measure(train_phases(trainer, t.train_loader, t.test_loader), batch)
    if dataset == "imagenet" and cell == SEARCHED:
        state = {"model": trainer.model.state_dict(), "genotype": genotype.to_dict()}
        save_torch(ctx.root / train_outs(dataset, cell)["model"], {**state, "network": t.network})
    n_train, n_test = t.train_size, len(t.test_loader.dataset)  # type: ignore[arg-type]
    train_ratio, test_ratio = _real_ratio(ctx, dataset)
    loop = t.params.loop
    steps = (
        train_schedule(loop, n_train, n_test, batch, ctx.world),
        train_schedule(
            loop, round(n_train * train_ratio), round(n_test * test_ratio), batch, ctx.world
        ),
    )
    net = t.params.network
    shape = {"C": net.C, "layers": net.layers, "image_size": t.params.image_size}
    extra = {
        "network": {**shape, "genotype": str(genotype), **t.size},
        "data": {"train": n_train, "test": n_test},
    }
    return _row(ctx, m, steps, {"epochs": loop.epochs}, extra)


# --------------------------------------------------------------------------- transfer


def dry_transfer(ctx: Context) -> dict[str, Any]:
    """The SSD's training iterations and its COCO evaluation through MMEngine's Runner, with
    the backbone converted from the dry-run ImageNet network, as the stage converts it."""
    from detection.checkpoint import convert_imagenet_checkpoint  # noqa: PLC0415 - mm* here only
    from detection.configs import config_file  # noqa: PLC0415
    from detection.dry_run import ssd_phases  # noqa: PLC0415
    from detection.transfer import BackboneInit, CocoData, Schedule, build_config  # noqa: PLC0415

    p, transfer_params = ctx.p, ctx.p.transfer_ssd
    coco = _manifest(ctx)["datasets"]["coco"]
    data = CocoData(ctx.root / coco["root"], tuple(coco["categories"]))
    model_file = read_model(ctx.root / train_outs("imagenet", SEARCHED)["model"])
    weights = convert_imagenet_checkpoint(model_file)
    work_dir = ctx.root / "transfer_ssd"
    backbone_file = work_dir / "backbone.pth"
    save_torch(backbone_file, weights)
    meta = weights["meta"]
    backbone = BackboneInit(
        meta["genotype"],
        meta["C"],
        meta["layers"],
        backbone_file if transfer_params.pretrained else None,
    )
    batch = ctx.batch(transfer_params.batch_size)
    schedule = Schedule(
        transfer_params.epochs,
        batch,
        transfer_params.lr,
        transfer_params.val_interval,
        transfer_params.log_interval,
        p.data.num_workers,
    )
    cfg = build_config(config_file(transfer_params.config), data, schedule, backbone, p.seed)
    phases = ssd_phases(cfg, work_dir / "work", ctx.device)
    m = ctx.measure(phases.phases, batch)
    n_train, n_val, val_batch = phases.sizes()
    train_ratio, val_ratio = _real_ratio(ctx, "coco")
    steps = tuple(
        _ssd_schedule(
            transfer_params.epochs,
            transfer_params.val_interval,
            n_t,
            n_v,
            batch,
            val_batch,
            ctx.world,
        )
        for n_t, n_v in ((n_train, n_val), (round(n_train * train_ratio), round(n_val * val_ratio)))
    )
    extra = {
        "network": {"config": transfer_params.config, "C": meta["C"], "layers": meta["layers"]},
        "data": {"train": n_train, "val": n_val, "val_batch": val_batch},
    }
    return _row(ctx, m, (steps[0], steps[1]), {"epochs": transfer_params.epochs}, extra)


def _ssd_schedule(
    epochs: int, val_interval: int, n_train: int, n_val: int, batch: int, val_batch: int, world: int
) -> dict[str, int]:
    """Steps of the SSD's training (its dataset already repeated by the config) and of its
    COCO evaluations (every ``val_interval`` epochs and after the last, as MMEngine's loop)."""
    return {
        "train": epochs * steps_per_epoch(n_train, batch, world),
        "eval": evaluations(epochs, val_interval) * steps_per_epoch(n_val, val_batch, world),
    }


def read_model(path: Path) -> dict[str, Any]:
    """A dry-run network saved by :func:`dry_train` (MissingInputError names its stage)."""
    loaded: dict[str, Any] = torch.load(
        upstream(path, "train_imagenet@searched"), map_location="cpu", weights_only=False
    )
    return loaded
