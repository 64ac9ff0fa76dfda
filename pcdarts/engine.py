"""The epoch engine shared by the search (method §5) and the training (method §6) loops.

:func:`train_one_epoch` runs a step function over a loader and averages its loss and
top-k errors; :class:`EpochLoop` owns what both loops hold (the SGD optimiser and its
per-epoch schedule, epoch, history, wall time), their checkpoints, the evaluation cadence
and the per-epoch order: train, evaluate, record, step the schedule, log, checkpoint.
Everything leaves through a :class:`~pcdarts.tracking.Tracker` and the ``on_checkpoint``
callback; nothing here writes a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pcdarts.config import SearchConfig, TrainConfig
from pcdarts.distributed import is_main
from pcdarts.evaluate import evaluate
from pcdarts.metrics import Average, topk_errors
from pcdarts.runtime import (
    Cost,
    Stopwatch,
    check_finite,
    progress,
    rng_state,
    set_rng_state,
    to_device,
)
from pcdarts.schedule import lr_factor
from pcdarts.tracking import NullTracker, Tracker

Checkpoint = dict[str, Any]
# (step index, images (N, C, H, W), labels (N,)) -> (detached loss, detached logits (N, classes))
StepFn = Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]]


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler the epoch (it fixes the order), if it takes one."""
    set_sampler_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_sampler_epoch is not None:
        set_sampler_epoch(epoch)


def evaluation_due(epoch: int, epochs: int, eval_every: int) -> bool:
    """Evaluate after every ``eval_every``-th epoch and after the last."""
    return epoch == epochs - 1 or (epoch + 1) % eval_every == 0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    step_fn: StepFn,
    *,
    epoch: int,
    device: torch.device,
    channels_last: bool = False,
    ks: tuple[int, ...] = (1, 5),
    what: str = "training",
    desc: str = "train",
    show_progress: bool = False,
) -> dict[str, float]:
    """One pass of ``step_fn`` over ``loader`` in training mode.

    Returns ``train/loss`` and ``train/top{k}_err`` (%) for each k in ``ks``, sample-weighted
    means over every rank. A non-finite loss stops with the epoch and step (``what`` names
    the loss).
    """
    model.train()
    set_epoch(loader, epoch)
    loss_avg, errors = Average(), [Average() for _ in ks]
    bar: Iterable[Any] = progress(loader, desc, len(loader), show_progress)
    for step, batch in enumerate(bar):
        x, y = to_device(batch, device, channels_last)  # (N, C, H, W), (N,)
        loss, logits = step_fn(step, x, y)
        check_finite(loss, epoch, step, what)
        n = y.shape[0]
        for average, error in zip(errors, topk_errors(logits, y, ks), strict=True):
            average.update(error, n)
        loss_avg.update(loss.item(), n)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_avg.mean:.3f}", top1_err=f"{errors[0].mean:.1f}")
    return {
        "train/loss": loss_avg.global_mean(device),
        **{f"train/top{k}_err": a.global_mean(device) for k, a in zip(ks, errors, strict=True)},
    }


class EpochLoop:
    """What the search and the training loop share; subclasses add their epoch and record.

    Subclasses set ``kind`` (the checkpoint's), ``eval_prefix`` (the metrics' namespace of
    the evaluation) and ``eval_name``, and may extend :meth:`end_epoch`, :meth:`log_epoch`,
    :meth:`extra_state` and :meth:`load_extra_state`.
    """

    kind: ClassVar[str]
    eval_name: ClassVar[str] = "eval"

    def __init__(
        self,
        model: nn.Module,
        config: SearchConfig | TrainConfig,
        device: torch.device,
        parameters: Iterable[nn.Parameter],
        tracker: Tracker | None,
        show_progress: bool,
        min_lr: float = 0.0,
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.tracker = tracker or NullTracker()
        self.show_progress = show_progress and is_main()
        self.eval_prefix = "eval"
        self.optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_factor(
                config.lr_schedule, config.epochs, config.lr_warmup_epochs, min_lr / config.lr
            ),
        )
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> Checkpoint:
        """Everything needed to continue exactly: model, optimisers, schedule, RNG, history."""
        return {
            "kind": self.kind,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.extra_state(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "seconds": self.seconds,
            "rng": rng_state(),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: Checkpoint) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"not a {self.kind} checkpoint (kind={state.get('kind')!r})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_extra_state(state)
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.seconds = float(state["seconds"])
        set_rng_state(state["rng"])

    def extra_state(self) -> Checkpoint:
        return {}

    def load_extra_state(self, state: Checkpoint) -> None:
        pass

    # -- the loop --------------------------------------------------------------------
    def run_epochs(
        self,
        train_epoch: Callable[[int], dict[str, float]],
        eval_loader: DataLoader,
        on_checkpoint: Callable[[Checkpoint], None] | None,
    ) -> tuple[dict[str, float], Cost]:
        """From ``self.epoch`` to ``config.epochs``: the last epoch's metrics and the cost."""
        clock = Stopwatch(self.device, self.seconds)
        metrics: dict[str, float] = {}
        while self.epoch < self.config.epochs and not self.stopped():
            epoch = self.epoch
            metrics = train_epoch(epoch)
            if evaluation_due(epoch, self.config.epochs, self.config.eval_every):
                result = evaluate(
                    self.model,
                    eval_loader,
                    self.device,
                    bf16=self.config.bf16,
                    channels_last=self.config.channels_last,
                    show_progress=self.show_progress,
                    desc=f"{self.kind} {epoch} {self.eval_name}",
                )
                metrics.update({f"{self.eval_prefix}/{k}": v for k, v in result.items()})
            row = self.end_epoch(epoch, metrics)
            self.history.append(row)
            self.scheduler.step()
            self.epoch = epoch + 1
            self.seconds = clock.seconds
            self.tracker.log_metrics(metrics, step=epoch)
            self.log_epoch(epoch, row)
            if on_checkpoint is not None:
                on_checkpoint(self.state_dict())
        return metrics, clock.cost()

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """The epoch's history row (subclasses may add to ``metrics`` first)."""
        return {"epoch": epoch, **metrics}

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Log beyond the metrics, after them."""

    def stopped(self) -> bool:
        """Whether the loop ended before ``config.epochs`` (the search's stopping rules);
        read from the history, so a resumed run stays stopped."""
        return False
