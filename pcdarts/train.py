"""The training loop for final networks (method §6): CIFAR-10 evaluation, ImageNet retraining.

Auxiliary loss, drop path ramped linearly, label smoothing, cosine or linear-decay
schedule with warm-up; evaluation reports top-1/top-5 error (%). Results leave through
a tracker and the ``on_checkpoint`` callback; the loop writes no file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pcdarts.config import TrainConfig
from pcdarts.distributed import wrap_ddp
from pcdarts.engine import Checkpoint, EpochLoop, train_one_epoch
from pcdarts.network import Network, NetworkOutput
from pcdarts.runtime import Cost, autocast, memory_format
from pcdarts.schedule import drop_path_prob
from pcdarts.tracking import Tracker


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    cost: Cost
    metrics: dict[str, float]


class _WithAux(nn.Module):
    """Runs :meth:`Network.forward_with_aux` as ``forward``: DDP drives only ``forward``."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> NetworkOutput:
        return self.network.forward_with_aux(x)


class Trainer(EpochLoop):
    """Trains a final :class:`Network`; ``run`` is resumable from ``state_dict``."""

    kind = "train"

    def __init__(
        self,
        model: Network,
        config: TrainConfig,
        device: torch.device,
        tracker: Tracker | None = None,
        show_progress: bool = True,
        eval_prefix: str = "test",
    ) -> None:
        model = model.to(device)
        if config.channels_last:
            model.to(memory_format=memory_format(device, channels_last=True))
        self.ddp = wrap_ddp(_WithAux(model), device)  # itself in a single process
        super().__init__(model, config, device, model.parameters(), tracker, show_progress)
        self.model: Network = model
        self.config: TrainConfig = config
        self.eval_prefix = eval_prefix
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def run(
        self,
        train_loader: DataLoader,
        eval_loader: DataLoader,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> TrainResult:
        metrics, cost = self.run_epochs(
            lambda epoch: self.train_one_epoch(epoch, train_loader), eval_loader, on_checkpoint
        )
        return TrainResult(self.history, cost, {**metrics, **cost.metrics()})

    def train_one_epoch(self, epoch: int, loader: DataLoader) -> dict[str, float]:
        """One training epoch, drop path ramped linearly from 0 (method §6)."""
        ramp = drop_path_prob(self.config.drop_path_prob, epoch, self.config.epochs)
        self.model.set_drop_path_prob(ramp)
        lr = self.optimizer.param_groups[0]["lr"]
        metrics = train_one_epoch(
            self.model,
            loader,
            lambda _, x, y: self._step(x, y),
            epoch=epoch,
            device=self.device,
            channels_last=self.config.channels_last,
            desc=f"train {epoch}",
            show_progress=self.show_progress,
        )
        return {**metrics, "lr": lr, "train/drop_path_prob": self.model.drop_path_prob}

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
