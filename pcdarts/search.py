"""The architecture search loop (method §5): one loop for CIFAR-10 and ImageNet.

Per iteration: one architect step on a batch of the arch split (after the weight-only
warm-up), then one SGD step of the weights on a batch of the weight split. The arch
batches come from one iterator per epoch (never a new loader per step). Everything the
loop produces leaves through a :class:`~pcdarts.tracking.Tracker` and the
``on_checkpoint`` callback; the loop writes no file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pcdarts.architect import Architect
from pcdarts.config import SearchConfig
from pcdarts.distributed import is_distributed, is_main, wrap_ddp
from pcdarts.evaluate import evaluate
from pcdarts.genotypes import Genotype, edge_weights
from pcdarts.metrics import Average, alpha_entropy, topk_errors
from pcdarts.runtime import (
    Cost,
    Stopwatch,
    autocast,
    check_finite,
    frozen,
    memory_format,
    progress,
    rng_state,
    set_rng_state,
    to_device,
)
from pcdarts.schedule import lr_factor
from pcdarts.supernet import Supernet
from pcdarts.tracking import NullTracker, Tracker

Checkpoint = dict[str, Any]


@dataclass
class SearchResult:
    genotype: Genotype
    history: list[dict[str, Any]]
    cost: Cost
    metrics: dict[str, float]


class Searcher:
    """Owns the supernet's optimisers and schedule; ``run`` searches, resumably."""

    def __init__(
        self,
        model: Supernet,
        config: SearchConfig,
        device: torch.device,
        tracker: Tracker | None = None,
        show_progress: bool = True,
    ) -> None:
        if config.sync_bn and is_distributed():
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: the BNs are children
        self.model = model.to(device)
        if config.channels_last:
            self.model.to(memory_format=memory_format(device, channels_last=True))
        # The weight step runs through DDP; the arch step and evaluation use the module itself.
        self.ddp = wrap_ddp(self.model, device, exclude=model.arch_parameters())
        self.config = config
        self.device = device
        self.tracker = tracker or NullTracker()
        self.show_progress = show_progress and is_main()
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(
            model.weight_parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_factor(
                config.lr_schedule,
                config.epochs,
                config.lr_warmup_epochs,
                config.lr_min / config.lr,
            ),
        )
        self.architect = Architect(model, self._criterion, config.architect)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0

    def _criterion(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.criterion(logits.float(), y)  # in float32 also under bf16 autocast

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> Checkpoint:
        """Everything needed to continue exactly: weights, arch, optimisers, RNG, history."""
        return {
            "kind": "search",
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "arch_optimizer": self.architect.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "seconds": self.seconds,
            "rng": rng_state(),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: Checkpoint) -> None:
        if state.get("kind") != "search":
            raise ValueError(f"not a search checkpoint (kind={state.get('kind')!r})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.architect.optimizer.load_state_dict(state["arch_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.seconds = float(state["seconds"])
        set_rng_state(state["rng"])

    # -- the loop --------------------------------------------------------------------
    def run(
        self,
        weight_loader: DataLoader,
        arch_loader: DataLoader,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> SearchResult:
        """Search from ``self.epoch`` to ``config.epochs``; checkpoint after every epoch."""
        clock = Stopwatch(self.device, self.seconds)
        previous = Genotype.from_dict(self.history[-1]["genotype"]) if self.history else None
        metrics: dict[str, float] = {}
        while self.epoch < self.config.epochs:
            epoch = self.epoch
            metrics = self._train_epoch(epoch, weight_loader, arch_loader)
            last = epoch == self.config.epochs - 1
            if last or (epoch + 1) % self.config.eval_every == 0:
                arch_eval = evaluate(
                    self.model,
                    arch_loader,
                    self.device,
                    bf16=self.config.bf16,
                    channels_last=self.config.channels_last,
                    show_progress=self.show_progress,
                    desc=f"search {epoch} arch-split eval",
                )
                metrics.update({f"arch/{k}": v for k, v in arch_eval.items()})
            genotype = self.model.genotype()
            changed = previous is not None and genotype != previous
            previous = genotype
            record = self._record(epoch, genotype, changed)
            metrics.update(
                {
                    "search/alpha_entropy": (
                        record["alpha_entropy_normal"] + record["alpha_entropy_reduce"]
                    )
                    / 2,
                    "search/alpha_entropy_normal": record["alpha_entropy_normal"],
                    "search/alpha_entropy_reduce": record["alpha_entropy_reduce"],
                    "search/genotype_changed": float(changed),
                }
            )
            record["metrics"] = dict(metrics)
            self.history.append(record)
            self.scheduler.step()
            self.epoch = epoch + 1
            self.seconds = clock.seconds
            self.tracker.log_metrics(metrics, step=epoch)
            self.tracker.log_record("search/epoch", record, step=epoch)
            if on_checkpoint is not None:
                on_checkpoint(self.state_dict())
        cost = clock.cost()
        final = {**metrics, **cost.metrics()}
        return SearchResult(self.model.genotype(), self.history, cost, final)

    def _train_epoch(
        self, epoch: int, weight_loader: DataLoader, arch_loader: DataLoader
    ) -> dict[str, float]:
        self.model.train()
        search_arch = epoch >= self.config.warmup_epochs  # weight-only warm-up (method §5)
        _set_epoch(weight_loader, epoch)
        arch_batches = _cycle(arch_loader, epoch) if search_arch else None
        lr = self.optimizer.param_groups[0]["lr"]
        loss_avg, err_avg, arch_loss_avg = Average(), Average(), Average()
        bar = progress(weight_loader, f"search {epoch}", len(weight_loader), self.show_progress)
        for step, batch in enumerate(bar):
            x, y = to_device(batch, self.device, self.config.channels_last)
            if arch_batches is not None:
                x_arch, y_arch = to_device(
                    next(arch_batches), self.device, self.config.channels_last
                )
                with autocast(self.device, self.config.bf16):
                    arch_loss = self.architect.step(x_arch, y_arch, x, y, lr, self.optimizer)
                check_finite(arch_loss, epoch, step, "architecture")
                arch_loss_avg.update(arch_loss.item(), y_arch.shape[0])
            loss, logits = self._weight_step(x, y)
            check_finite(loss, epoch, step, "weight")
            n = y.shape[0]
            loss_avg.update(loss.item(), n)
            err_avg.update(topk_errors(logits, y, (1,))[0], n)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_avg.mean:.3f}", top1_err=f"{err_avg.mean:.1f}")
        metrics = {
            "train/loss": loss_avg.global_mean(self.device),
            "train/top1_err": err_avg.global_mean(self.device),
            "lr": lr,
        }
        if arch_loss_avg.count:
            metrics["arch/step_loss"] = arch_loss_avg.global_mean(self.device)
        return metrics

    def _weight_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        # No alpha gradients are needed here: freezing them saves their backward and memory.
        with frozen(self.model.arch_parameters()), autocast(self.device, self.config.bf16):
            logits = self.ddp(x)
        loss = self.criterion(logits.float(), y)
        loss.backward()
        nn.utils.clip_grad_norm_(list(self.model.weight_parameters()), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach(), logits.detach().float()

    @torch.no_grad()
    def _record(self, epoch: int, genotype: Genotype, changed: bool) -> dict[str, Any]:
        m = self.model
        record: dict[str, Any] = {
            "epoch": epoch,
            "genotype": genotype.to_dict(),
            "genotype_changed": changed,
            "alphas_normal": torch.softmax(m.alphas_normal.float(), -1).cpu().tolist(),
            "alphas_reduce": torch.softmax(m.alphas_reduce.float(), -1).cpu().tolist(),
            "alpha_entropy_normal": alpha_entropy(m.alphas_normal),
            "alpha_entropy_reduce": alpha_entropy(m.alphas_reduce),
        }
        if m.edge_norm:
            record["betas_normal"] = edge_weights(m.betas_normal.float()).cpu().tolist()
            record["betas_reduce"] = edge_weights(m.betas_reduce.float()).cpu().tolist()
        return record


_PASS_STRIDE = 1000  # sampler epochs reserved per search epoch for passes over the arch split


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    set_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)


def _cycle(loader: DataLoader, epoch: int) -> Iterator[Any]:
    """Batches of ``loader`` without end: one iterator at a time, a new pass when exhausted.

    The ImageNet arch split is 1/4 of the weight split (method §5), so it is passed over
    several times per epoch; each pass gets its own order, fixed by (epoch, pass).
    """
    passes = 0
    while True:
        _set_epoch(loader, epoch * _PASS_STRIDE + passes)
        yield from loader
        passes += 1
