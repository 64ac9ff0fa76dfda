"""SSD transfer to COCO-format data with MMEngine's Runner (method §7), as plain functions.

:func:`build_config` turns one of ``detection/configs`` into the run's config (data,
classes, schedule, backbone); :func:`train_and_evaluate` trains it, resuming from its work
folder, evaluates with MMDetection's ``CocoMetric`` (pycocotools) and returns the COCO
metrics, per-epoch curves and the detector's checkpoint. Metrics leave through a callback.

Under torchrun (a process group already joined, see ``pcdarts.distributed``) the Runner uses
MMEngine's ``pytorch`` launcher: DDP, ``DefaultSampler`` shards, ``CocoMetric`` gathering
every rank's predictions, checkpoints saved by rank 0 and loaded by every rank.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from torch import nn

import detection.backbone  # noqa: F401 - registers PCDARTSBackbone
import detection.ssd_head  # noqa: F401 - registers PredictableSSDHead
from pcdarts.distributed import (
    barrier,
    is_distributed,
    is_main,
    max_divergence,
    reduce_sums,
    unwrap,
)
from pcdarts.runtime import Cost, Stopwatch

OnMetrics = Callable[[Mapping[str, float], int], None]
# CocoMetric's summary, as MMDetection names it: AP over IoU .50:.95, at .50, at .75, and
# by object size (small < 32^2 < medium < 96^2 < large pixels).
COCO_METRICS = tuple(
    f"coco/bbox_{name}" for name in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
)
LAST_CHECKPOINT = "last_checkpoint"  # MMEngine's pointer file in the work folder
CORRUPT_SUFFIX = ".corrupt"  # an unusable checkpoint is renamed <name>.corrupt-<n>


@dataclass(frozen=True)
class CocoData:
    """A COCO 2017 layout: ``root/{train2017,val2017}/``, ``root/annotations/``."""

    root: Path
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int  # per process
    lr: float
    val_interval: int  # epochs between evaluations (the last epoch is always evaluated)
    log_interval: int  # iterations between logged losses
    num_workers: int = 0  # data loader workers


@dataclass(frozen=True)
class BackboneInit:
    """The backbone's architecture, and its pretrained weights (None: random init)."""

    genotype: dict[str, Any]
    C: int  # noqa: N815 - the paper's name
    layers: int
    checkpoint: Path | None = None


@dataclass
class TransferResult:
    metrics: dict[str, float]  # COCO_METRICS of the final model on val2017
    cost: Cost  # wall time across resumes x processes
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    checkpoint: dict[str, Any] = field(default_factory=dict)  # {"state_dict", "meta"}


def build_config(
    config_file: Path, data: CocoData, schedule: Schedule, backbone: BackboneInit, seed: int
) -> Config:
    """The run's config: ``config_file`` with the data, classes, schedule and backbone set.

    Raises ValueError if the config's backbone size differs from the checkpoint's network.
    """
    cfg = Config.fromfile(str(config_file))
    net = cfg.model.backbone
    if (net.C, net.layers) != (backbone.C, backbone.layers):
        raise ValueError(
            f"{config_file}: backbone C={net.C}, layers={net.layers}, but the ImageNet network "
            f"has C={backbone.C}, layers={backbone.layers}: make them agree"
        )
    net.genotype = backbone.genotype
    if backbone.checkpoint is not None:
        net.init_cfg = dict(type="Pretrained", checkpoint=str(backbone.checkpoint))
    cfg.model.bbox_head.num_classes = len(data.classes)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        _set_data(cfg[loader], data, schedule.num_workers)
    cfg.train_dataloader.batch_size = schedule.batch_size
    for evaluator in ("val_evaluator", "test_evaluator"):
        cfg[evaluator].ann_file = str(data.root / "annotations" / "instances_val2017.json")
    cfg.train_cfg.max_epochs = schedule.epochs
    cfg.train_cfg.val_interval = schedule.val_interval
    for scheduler in cfg.param_scheduler:
        if scheduler.get("by_epoch", True):  # epoch-based decay spans the whole run
            scheduler.end = schedule.epochs
            if "T_max" in scheduler:
                scheduler.T_max = schedule.epochs
    cfg.optim_wrapper.optimizer.lr = schedule.lr
    cfg.default_hooks.logger.interval = schedule.log_interval
    # One checkpoint per epoch, only the last kept: enough to resume.
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1, max_keep_ckpts=1)
    cfg.randomness = dict(seed=seed, deterministic=False)
    return cfg


def _set_data(loader: ConfigDict, data: CocoData, num_workers: int) -> None:
    loader.num_workers = num_workers
    loader.persistent_workers = num_workers > 0  # PyTorch refuses it without workers
    for dataset in _leaf_datasets(loader.dataset):
        dataset.data_root = str(data.root)
        dataset.metainfo = dict(classes=data.classes)


def _leaf_datasets(dataset: ConfigDict) -> Iterator[ConfigDict]:
    """The datasets that read files, inside wrappers such as ``RepeatDataset``."""
    if "dataset" in dataset:
        yield from _leaf_datasets(dataset.dataset)
    elif "datasets" in dataset:
        for child in dataset.datasets:
            yield from _leaf_datasets(child)
    else:
        yield dataset


@MODEL_WRAPPERS.register_module()
class DeviceDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine's DDP wrapper, on the device the run asked for, GPU or CPU.

    The Runner moves the detector to MMEngine's own pick (CUDA when present) and passes
    ``device_ids=[LOCAL_RANK]``, which DDP accepts for a GPU module only; this wrapper moves
    the detector to ``device`` first and keeps ``device_ids`` for CUDA alone, so a CPU (gloo)
    run takes the same path as a GPU (NCCL) one.
    """

    def __init__(
        self, module: nn.Module, device: str, device_ids: list[int] | None = None, **kwargs: Any
    ) -> None:
        on_gpu = torch.device(device).type == "cuda"
        super().__init__(
            module=module.to(device), device_ids=device_ids if on_gpu else None, **kwargs
        )


class MetricsHook(Hook):
    """Sends losses (every ``interval`` iterations, step = iteration) and evaluations (step =
    epoch) to ``on_metrics``; keeps per-epoch rows and the wall time, saved in and restored
    from checkpoints. Losses are averaged over the ranks before they leave."""

    priority = "NORMAL"  # before CheckpointHook (VERY_LOW): a saved epoch has its row

    def __init__(self, on_metrics: OnMetrics, interval: int, device: torch.device) -> None:
        self.on_metrics = on_metrics
        self.interval = interval
        self.device = device
        self.history: list[dict[str, float]] = []
        self.clock = Stopwatch(device)
        self._sums: dict[str, float] = {}
        self._count = 0

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        losses = {f"train/{k}": _scalar(v) for k, v in sorted((outputs or {}).items())}
        for key, value in losses.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        if self.every_n_train_iters(runner, self.interval):
            lr = float(runner.optim_wrapper.get_lr()["lr"][0])
            self.on_metrics({**self._mean(losses, 1), "train/lr": lr}, runner.iter + 1)

    def after_train_epoch(self, runner: Runner) -> None:
        row = {"epoch": float(runner.epoch + 1)}
        row.update(self._mean(self._sums, self._count))
        row["train/lr"] = float(runner.optim_wrapper.get_lr()["lr"][0])
        self.history.append(row)
        self._sums, self._count = {}, 0

    def _mean(self, sums: dict[str, float], count: int) -> dict[str, float]:
        """Per-rank sums over ``count`` iterations, averaged over iterations and ranks."""
        *totals, n = reduce_sums([*sums.values(), float(count)], self.device)
        return {k: v / max(n, 1.0) for k, v in zip(sums, totals, strict=True)}

    def after_val_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        values = {
            f"val/{k.split('/')[-1]}": float(v)
            for k, v in (metrics or {}).items()
            if isinstance(v, int | float)
        }  # CocoMetric gathered every rank's predictions: the same values on every rank
        self.on_metrics(values, runner.epoch)
        if self.history and self.history[-1]["epoch"] == runner.epoch:
            self.history[-1].update(values)

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        checkpoint["pcdarts_history"] = list(self.history)
        checkpoint["pcdarts_seconds"] = self.clock.seconds

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("pcdarts_history", []))
        self.clock = Stopwatch(self.device, checkpoint.get("pcdarts_seconds", 0.0))


class DivergenceHook(Hook):
    """Records, after every iteration, how far the ranks' weights are apart (0.0 when DDP
    keeps them identical): a check for tests and debugging, one collective per iteration."""

    def __init__(self) -> None:
        self.divergence: list[float] = []

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.divergence.append(max_divergence(list(unwrap(runner.model).parameters())))


@contextlib.contextmanager
def trusted_checkpoints() -> Iterator[None]:
    """Let MMEngine 0.10.7 resume from its own checkpoints under torch >= 2.6.

    MMEngine calls ``torch.load`` without ``weights_only``; torch now defaults it to True,
    which refuses the logger state (``HistoryBuffer``) in MMEngine's checkpoints. The files
    read are this run's own, in its work folder.
    """
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def set_aside_broken_resume_point(work_dir: Path) -> Path | None:
    """Make ``work_dir`` safe for MMEngine's ``resume=True``: if ``last_checkpoint`` names a
    checkpoint that is missing or cannot be loaded (a process killed while MMEngine, which
    does not write atomically, saved it), rename both aside (``.corrupt-<n>``) with a warning,
    so the run starts afresh instead of crashing. Returns the set-aside checkpoint, if any."""
    pointer = work_dir / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    target = Path(pointer.read_text().strip() or work_dir / "missing")
    try:
        with trusted_checkpoints():
            state = torch.load(target, map_location="cpu")
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a checkpoint dict")
        return None
    except Exception as error:  # missing, truncated, not a checkpoint
        problem = str(error)[:200]
    n = 1
    while any(p.with_name(f"{p.name}{CORRUPT_SUFFIX}-{n}").exists() for p in (pointer, target)):
        n += 1
    for path in (target, pointer):
        if path.exists():
            path.rename(path.with_name(f"{path.name}{CORRUPT_SUFFIX}-{n}"))
    warnings.warn(
        f"SSD checkpoint {target} cannot be resumed from ({problem}); set aside as "
        f"{target.name}{CORRUPT_SUFFIX}-{n}, training starts afresh",
        RuntimeWarning,
        stacklevel=2,
    )
    return target


def build_runner(cfg: Config, work_dir: Path, device: torch.device) -> Runner:
    """MMEngine's Runner of ``cfg`` in ``work_dir`` on ``device``, in this process group."""
    cfg = cfg.copy()
    cfg.work_dir = str(work_dir)
    cfg.launcher = "pytorch" if is_distributed() else "none"  # the group is already joined
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        # Gather every rank's predictions through the process group (all_gather_object, NCCL
        # or gloo), not MMEngine's default of pickles in ./.dist_test/, a folder in the
        # repository that every machine would have to share.
        evaluator.collect_device = "gpu"
    # MMEngine's defaults for its DDP wrapper, on our device.
    cfg.model_wrapper_cfg = dict(
        type="DeviceDistributedDataParallel", device=str(device), broadcast_buffers=False
    )
    runner = Runner.from_cfg(cfg)
    if not is_distributed():
        runner.model.to(device)  # unwrapped: the optimizer is built later, in train()
    return runner


def train_and_evaluate(
    cfg: Config,
    work_dir: Path,
    on_metrics: OnMetrics,
    device: torch.device,
    hooks: tuple[Hook, ...] = (),
) -> TransferResult:
    """Train ``cfg`` on ``device`` in ``work_dir`` (resuming from its last checkpoint there),
    evaluate on val2017 with ``CocoMetric``; returns the metrics, the cost, the curves and the
    final checkpoint. Under torchrun every rank calls this; ``device`` is the rank's own."""
    if is_main():
        set_aside_broken_resume_point(work_dir)
    barrier()  # every rank sees the same work folder
    cfg = cfg.copy()
    cfg.resume = True  # from work_dir's last checkpoint, if any
    runner = build_runner(cfg, work_dir, device)
    hook = MetricsHook(on_metrics, cfg.default_hooks.logger.interval, device)
    for extra in (hook, *hooks):
        runner.register_hook(extra)
    with trusted_checkpoints():
        runner.train()
        last = hook.history[-1] if hook.history else {}
        if "val/bbox_mAP" in last and last["epoch"] == cfg.train_cfg.max_epochs:
            metrics = {name: last[f"val/{name.split('/')[-1]}"] for name in COCO_METRICS}
        else:  # resumed after the last epoch: nothing was evaluated in this process
            metrics = {name: float(runner.test()[name]) for name in COCO_METRICS}
    model = unwrap(runner.model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {"dataset_meta": dict(runner.train_dataloader.dataset.metainfo), "epoch": runner.epoch}
    return TransferResult(
        metrics, hook.clock.cost(), hook.history, {"state_dict": state, "meta": meta}
    )


def _scalar(value: Any) -> float:
    """A logged loss (a 0-d tensor or a number) as a float."""
    return float(value.item()) if hasattr(value, "item") else float(value)
