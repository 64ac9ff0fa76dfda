"""The training loop for final networks (method §6): CIFAR-10 evaluation, ImageNet retraining.

Auxiliary loss, drop path ramped linearly, label smoothing, cosine or linear-decay
schedule with warm-up; evaluation reports top-1/top-5 error (%). Results leave through
a tracker and the ``on_checkpoint`` callback; the loop writes no file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pcdarts.config import TrainConfig
from pcdarts.distributed import is_main, wrap_ddp
from pcdarts.evaluate import evaluate
from pcdarts.metrics import Average, topk_errors
from pcdarts.network import Network
from pcdarts.runtime import (
    Cost,
    Stopwatch,
    autocast,
    check_finite,
    memory_format,
    progress,
    rng_state,
    set_rng_state,
    to_device,
)
from pcdarts.schedule import lr_factor
from pcdarts.tracking import NullTracker, Tracker

Checkpoint = dict[str, Any]


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    cost: Cost
    metrics: dict[str, float]


class Trainer:
    """Trains a final :class:`Network`; ``run`` is resumable from ``state_dict``."""

    def __init__(
        self,
        model: Network,
        config: TrainConfig,
        device: torch.device,
        tracker: Tracker | None = None,
        show_progress: bool = True,
        eval_prefix: str = "test",
    ) -> None:
        self.model = model.to(device)
        if config.channels_last:
            self.model.to(memory_format=memory_format(device, channels_last=True))
        self.ddp = wrap_ddp(self.model, device)  # the model itself in a single process
        self.config = config
        self.device = device
        self.tracker = tracker or NullTracker()
        self.show_progress = show_progress and is_main()
        self.eval_prefix = eval_prefix
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(config.lr_schedule, config.epochs, config.lr_warmup_epochs)
        )
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0

    def state_dict(self) -> Checkpoint:
        return {
            "kind": "train",
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "seconds": self.seconds,
            "rng": rng_state(),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: Checkpoint) -> None:
        if state.get("kind") != "train":
            raise ValueError(f"not a training checkpoint (kind={state.get('kind')!r})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.seconds = float(state["seconds"])
        set_rng_state(state["rng"])

    def run(
        self,
        train_loader: DataLoader,
        eval_loader: DataLoader,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> TrainResult:
        clock = Stopwatch(self.device, self.seconds)
        metrics: dict[str, float] = {}
        while self.epoch < self.config.epochs:
            epoch = self.epoch
            # Drop path ramps linearly from 0 (reference: drop_path_prob * epoch / epochs).
            self.model.drop_path_prob = self.config.drop_path_prob * epoch / self.config.epochs
            metrics = self._train_epoch(epoch, train_loader)
            if epoch == self.config.epochs - 1 or (epoch + 1) % self.config.eval_every == 0:
                result = evaluate(
                    self.model,
                    eval_loader,
                    self.device,
                    bf16=self.config.bf16,
                    channels_last=self.config.channels_last,
                    show_progress=self.show_progress,
                    desc=f"train {epoch} eval",
                )
                metrics.update({f"{self.eval_prefix}/{k}": v for k, v in result.items()})
            self.history.append({"epoch": epoch, **metrics})
            self.scheduler.step()
            self.epoch = epoch + 1
            self.seconds = clock.seconds
            self.tracker.log_metrics(metrics, step=epoch)
            if on_checkpoint is not None:
                on_checkpoint(self.state_dict())
        cost = clock.cost()
        return TrainResult(self.history, cost, {**metrics, **cost.metrics()})

    def _train_epoch(self, epoch: int, loader: DataLoader) -> dict[str, float]:
        self.model.train()
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        loss_avg, top1, top5 = Average(), Average(), Average()
        bar = progress(loader, f"train {epoch}", len(loader), self.show_progress)
        for step, batch in enumerate(bar):
            x, y = to_device(batch, self.device, self.config.channels_last)
            loss, logits = self._step(x, y)
            check_finite(loss, epoch, step, "training")
            n = y.shape[0]
            e1, e5 = topk_errors(logits, y)
            loss_avg.update(loss.item(), n)
            top1.update(e1, n)
            top5.update(e5, n)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_avg.mean:.3f}", top1_err=f"{top1.mean:.1f}")
        return {
            "train/loss": loss_avg.global_mean(self.device),
            "train/top1_err": top1.global_mean(self.device),
            "train/top5_err": top5.global_mean(self.device),
            "lr": lr,
            "train/drop_path_prob": self.model.drop_path_prob,
        }

    def _step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.bf16):
            logits, logits_aux = self.ddp(x)
        loss = self.criterion(logits.float(), y)
        if logits_aux is not None and self.config.aux_weight > 0:
            loss = loss + self.config.aux_weight * self.criterion(logits_aux.float(), y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach(), logits.detach().float()
