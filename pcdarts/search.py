"""The architecture search loop (method §5): one loop for CIFAR-10 and ImageNet.

Per iteration: one architect step on a batch of the arch split (after the weight-only
warm-up), then one SGD step of the weights on a batch of the weight split. The arch
batches come from one iterator per epoch (never a new loader per step). Everything the
loop produces leaves through a :class:`~pcdarts.tracking.Tracker` and the
``on_checkpoint`` callback; the loop writes no file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from pcdarts.architect import Architect
from pcdarts.config import SearchConfig
from pcdarts.derivation import edge_weights, stable_since
from pcdarts.diagnostics import (
    Eigenvalue,
    changed_pairs,
    dominant_eigenvalue,
    held_out_batch,
    op_counts,
    trajectory_metrics,
)
from pcdarts.distributed import is_distributed, wrap_ddp
from pcdarts.engine import Checkpoint, EpochLoop, evaluation_due, set_epoch, train_one_epoch
from pcdarts.genotypes import Genotype
from pcdarts.metrics import Average, alpha_entropy
from pcdarts.ops import PRIMITIVES
from pcdarts.runtime import Cost, autocast, check_finite, frozen, memory_format, to_device
from pcdarts.stopping import should_stop
from pcdarts.supernet import Supernet
from pcdarts.tracking import Tracker


@dataclass
class SearchResult:
    genotype: Genotype
    history: list[dict[str, Any]]
    cost: Cost
    metrics: dict[str, float]
    stop: dict[str, Any] | None = None  # the rule that stopped the search, if one did


class Searcher(EpochLoop):
    """Owns the supernet's optimisers and schedule; ``run`` searches, resumably."""

    kind = "search"
    eval_name = "arch-split eval"

    def __init__(
        self,
        model: Supernet,
        config: SearchConfig,
        device: torch.device,
        tracker: Tracker | None = None,
        show_progress: bool = True,
        seed: int = 0,
    ) -> None:
        if config.sync_bn and is_distributed():
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: the BNs are children
        model = model.to(device)
        if config.channels_last:
            model.to(memory_format=memory_format(device, channels_last=True))
        # The weight step runs through DDP; the arch step and evaluation use the module itself.
        self.ddp = wrap_ddp(model, device, exclude=model.arch_parameters())
        super().__init__(
            model,
            config,
            device,
            model.weight_parameters(),
            tracker,
            show_progress,
            min_lr=config.lr_min,
        )
        self.model: Supernet = model
        self.config: SearchConfig = config
        self.eval_prefix = "arch"
        self.criterion = nn.CrossEntropyLoss()
        self.architect = Architect(model, self._criterion, config.architect)
        self._previous: Genotype | None = None
        self.seed = seed  # the stage's seed: the diagnostics' own generators start from it
        self._probe: tuple[Tensor, Tensor] | None = None  # the Hessian's fixed held-out batch

    def _criterion(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.criterion(logits.float(), y)  # in float32 also under bf16 autocast

    def extra_state(self) -> Checkpoint:
        return {"arch_optimizer": self.architect.optimizer.state_dict()}

    def load_extra_state(self, state: Checkpoint) -> None:
        self.architect.optimizer.load_state_dict(state["arch_optimizer"])

    # -- the loop --------------------------------------------------------------------
    def run(
        self,
        weight_loader: DataLoader,
        arch_loader: DataLoader,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> SearchResult:
        """Search from ``self.epoch`` to ``config.epochs``; checkpoint after every epoch."""
        self._previous = Genotype.from_dict(self.history[-1]["genotype"]) if self.history else None
        if self.config.diagnostics.hessian:
            self._probe = self._held_out_batch(arch_loader)
        metrics, cost = self.run_epochs(
            lambda epoch: self.train_one_epoch(epoch, weight_loader, arch_loader),
            arch_loader,
            on_checkpoint,
        )
        final = {**metrics, **cost.metrics()}
        stop = self.history[-1].get("stop") if self.history else None
        return SearchResult(self.model.genotype(), self.history, cost, final, stop)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """The epoch's record: genotype, alphas, betas and their entropies, and metrics."""
        genotype = self.model.genotype()
        previous = self._previous
        changed = self._previous is not None and genotype != self._previous
        self._previous = genotype
        record = self._record(epoch, genotype, changed)
        metrics.update(
            {
                "search/alpha_entropy": (
                    record["alpha_entropy_normal"] + record["alpha_entropy_reduce"]
                )
                / 2,
                "search/alpha_entropy_normal": record["alpha_entropy_normal"],
                "search/alpha_entropy_reduce": record["alpha_entropy_reduce"],
                # 1 = uniform alphas, 0 = one op per edge
                "search/alpha_entropy_normalised": (
                    record["alpha_entropy_normal"] + record["alpha_entropy_reduce"]
                )
                / (2 * math.log(len(PRIMITIVES))),
                "search/genotype_changed": float(changed),
                "search/derivation_margin": record["derivation_margin"],
                "search/stable_since_epoch": float(record["stable_since_epoch"]),
            }
        )
        record.update(self._diagnose(epoch, genotype, previous, metrics))
        record["metrics"] = dict(metrics)
        return record

    def stopped(self) -> bool:
        """Whether a stopping rule (pcdarts.stopping) ended the search after the last epoch."""
        return bool(self.history) and "stop" in self.history[-1]

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.tracker.log_record("search/epoch", row, step=epoch)
        self.tracker.log_metrics(trajectory_metrics(row), step=epoch)

    def train_one_epoch(
        self, epoch: int, weight_loader: DataLoader, arch_loader: DataLoader
    ) -> dict[str, float]:
        """One search epoch: per weight batch, an architect step on an arch batch (after the
        weight-only warm-up, method §5), then an SGD step of the weights."""
        search_arch = epoch >= self.config.warmup_epochs  # weight-only warm-up (method §5)
        arch_batches = _cycle(arch_loader, epoch) if search_arch else None
        lr = self.optimizer.param_groups[0]["lr"]
        arch_loss_avg = Average()

        def step(index: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            if arch_batches is not None:
                x_arch, y_arch = to_device(
                    next(arch_batches), self.device, self.config.channels_last
                )
                with autocast(self.device, self.config.bf16):
                    arch_loss = self.architect.step(x_arch, y_arch, x, y, lr, self.optimizer)
                check_finite(arch_loss, epoch, index, "architecture")
                arch_loss_avg.update(arch_loss.item(), y_arch.shape[0])
            return self._weight_step(x, y)

        metrics = train_one_epoch(
            self.model,
            weight_loader,
            step,
            epoch=epoch,
            device=self.device,
            channels_last=self.config.channels_last,
            ks=(1,),
            what="weight",
            desc=f"search {epoch}",
            show_progress=self.show_progress,
        )
        metrics["lr"] = lr
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
            "derivation_margin": m.derivation_margin(),
            "stable_since_epoch": self._stable_since(epoch, genotype),
        }
        if m.edge_norm:
            record["betas_normal"] = edge_weights(m.betas_normal.float()).cpu().tolist()
            record["betas_reduce"] = edge_weights(m.betas_reduce.float()).cpu().tolist()
        return record

    # -- diagnostics (issue 25): they observe, and change no state of the search -------
    def _diagnose(
        self, epoch: int, genotype: Genotype, previous: Genotype | None, metrics: dict[str, float]
    ) -> dict[str, Any]:
        """The epoch's op counts, changed pairs, warm-up flag, eigenvalue (when due) and
        stop (when a rule says so): history fields, and their scalars added to ``metrics``."""
        counts = {**op_counts(genotype), **changed_pairs(previous, genotype)}
        row: dict[str, Any] = {"arch_frozen": epoch < self.config.warmup_epochs, **counts}
        metrics.update({f"search/{key}": float(value) for key, value in counts.items()})
        metrics["search/changed_pairs"] = float(
            counts["changed_pairs_normal"] + counts["changed_pairs_reduce"]
        )
        metrics["search/arch_frozen"] = float(row["arch_frozen"])  # weight-only warm-up
        if self._probe is not None and evaluation_due(
            epoch, self.config.epochs, self.config.diagnostics.hessian_every
        ):
            eigen = self._eigenvalue(self._probe)
            row["hessian"] = eigen.to_dict()
            metrics["search/hessian_seconds"] = eigen.seconds
            if eigen.finite:  # NaN/inf: in the history as such, never as a metric
                metrics["search/hessian_eigenvalue"] = eigen.value
        stop = should_stop([*self.history, {"epoch": epoch, **row}], self.config.stopping)
        if stop is not None:
            row["stop"] = stop.to_dict()
            metrics["search/stopped_epoch"] = float(stop.epoch)
        return row

    def _held_out_batch(self, arch_loader: DataLoader) -> tuple[Tensor, Tensor]:
        """The fixed batch of the arch split the eigenvalue is measured on, on the device."""
        indices = getattr(arch_loader.sampler, "indices", None)
        if indices is None:
            indices = range(len(arch_loader.dataset))  # type: ignore[arg-type]
        size = self.config.diagnostics.hessian_batch_size
        x, y = held_out_batch(arch_loader.dataset, indices, size, self.seed)
        x, y = to_device((x, y), self.device, self.config.channels_last)
        return x, y

    def _eigenvalue(self, batch: tuple[Tensor, Tensor]) -> Eigenvalue:
        """The Hessian's dominant eigenvalue of the arch-split loss w.r.t. alphas and betas,
        as the architect's loss is computed (training-mode BN, autocast as configured)."""
        x, y = batch
        d = self.config.diagnostics

        def loss() -> Tensor:
            with autocast(self.device, self.config.bf16):
                return self._criterion(self.model(x), y)

        return dominant_eigenvalue(
            self.model,
            loss,
            self.model.arch_parameters(),
            iterations=d.hessian_iterations,
            tolerance=d.hessian_tolerance,
            seed=self.seed,
        )

    def _stable_since(self, epoch: int, genotype: Genotype) -> int:
        """The first epoch from which the derived genotype has been ``genotype``."""
        past = [(h["epoch"], Genotype.from_dict(h["genotype"])) for h in self.history]
        epochs = [e for e, _ in past] + [epoch]
        return epochs[stable_since([g for _, g in past] + [genotype])]


_PASS_STRIDE = 1000  # sampler epochs reserved per search epoch for passes over the arch split


def _cycle(loader: DataLoader, epoch: int) -> Iterator[Any]:
    """Batches of ``loader`` without end: one iterator at a time, a new pass when exhausted.

    The ImageNet arch split is 1/4 of the weight split (method §5), so it is passed over
    several times per epoch; each pass gets its own order, fixed by (epoch, pass).
    """
    passes = 0
    while True:
        set_epoch(loader, epoch * _PASS_STRIDE + passes)
        yield from loader
        passes += 1
