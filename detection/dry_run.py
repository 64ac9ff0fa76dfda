"""The SSD transfer's dry run: MMEngine's own training and evaluation loops for a few full
batches, as ``pcdarts.profiling`` phases (``pipeline/dry_run_stages.py`` measures them).

The Runner is built as the stage builds it (:func:`detection.transfer.build_runner` on the
config of :func:`detection.transfer.build_config`); only the data sampler (a few batches), the
epoch count (one short epoch) and the checkpoint and evaluation hooks (off) differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import DATA_SAMPLERS
from mmengine.runner import Runner

from detection.transfer import build_runner
from pcdarts.profiling import PhaseFn, RepeatedIndices, TimedBatches


@DATA_SAMPLERS.register_module()
class RepeatedSampler(RepeatedIndices):
    """MMEngine's sampler interface to ``pcdarts.profiling.RepeatedIndices``: ``total``
    indices of the dataset, for a dry run's few full batches."""

    def __init__(self, dataset: Any, total: int, seed: int | None = None) -> None:
        super().__init__(range(len(dataset)), total, seed or 0)


class StepTimerHook(Hook):
    """Seconds of each training iteration: from one iteration's start to the next's (its
    next batch's loading included), the last one to the end of the epoch."""

    priority = "VERY_HIGH"  # before the checkpoint and logger hooks close the epoch

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []
        self._last: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        now = self._now()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now

    def after_train_epoch(self, runner: Runner) -> None:
        if self._last is not None:
            self.seconds.append(self._now() - self._last)
            self._last = None


@dataclass
class SSDPhases:
    """The SSD's dry run (``pcdarts.profiling`` phases): ``train`` runs MMEngine's own
    training loop over ``steps`` full batches (one short epoch, no checkpoint, no
    evaluation) in a fresh Runner per batch size; ``eval`` runs the evaluation loop's
    iterations at the config's val batch on that Runner's model (the COCO metric's final
    computation is left out)."""

    cfg: Config
    work_dir: Path
    device: torch.device
    runner: Runner | None = None

    @property
    def phases(self) -> dict[str, PhaseFn]:
        return {"train": self.train, "eval": self.eval}

    @property
    def val_batch(self) -> int:
        return int(self.cfg.val_dataloader.batch_size)

    def train(self, batch: int, steps: int) -> list[float]:
        cfg = self.cfg.copy()
        cfg.log_level = "WARNING"
        cfg.train_dataloader.batch_size = batch
        cfg.train_dataloader.sampler = dict(type="RepeatedSampler", total=batch * steps)
        cfg.val_dataloader.sampler = dict(type="RepeatedSampler", total=self.val_batch * steps)
        cfg.train_cfg.max_epochs = 1
        cfg.train_cfg.val_begin = 2  # no evaluation at the end of the short epoch
        cfg.default_hooks.checkpoint = None
        self.runner = None  # the previous batch's model and optimiser go first
        release = torch.cuda.empty_cache if self.device.type == "cuda" else (lambda: None)
        release()
        self.runner = build_runner(cfg, self.work_dir / f"batch_{batch}", self.device)
        timer = StepTimerHook(self.device)
        self.runner.register_hook(timer)
        self.runner.train()
        return timer.seconds

    def eval(self, batch: int, steps: int) -> list[float]:
        if self.runner is None:
            raise RuntimeError("the SSD's eval phase runs on the model of its train phase")
        loop = self.runner.val_loop
        self.runner.model.eval()
        timed = TimedBatches(loop.dataloader, self.device)
        for idx, data_batch in enumerate(timed):
            loop.run_iter(idx, data_batch)
        return timed.seconds

    def sizes(self) -> tuple[int, int, int]:
        """(train images after the config's repeat and filter, val images, val batch)."""
        if self.runner is None:
            raise RuntimeError("sizes are known once a train phase built the datasets")
        train = len(self.runner.train_dataloader.dataset)
        return train, len(self.runner.val_loop.dataloader.dataset), self.val_batch


def ssd_phases(cfg: Config, work_dir: Path, device: torch.device) -> SSDPhases:
    """The SSD of ``cfg`` (from :func:`build_config`) as dry-run phases, in ``work_dir``."""
    return SSDPhases(cfg, work_dir, device)
