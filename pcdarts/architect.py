"""The architect: updates alphas and betas on the arch split (method §5).

First order (default): the arch gradient is that of the arch-split loss at the current
weights. Second order (DARTS): the loss is taken at weights after one virtual SGD step,
w' = w - eta * (momentum * buf + dL_train/dw + wd * w), and the implicit term is a
finite-difference Hessian-vector product with eps = 0.01 / ||dL_val/dw'||.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pcdarts.config import ArchitectConfig
from pcdarts.distributed import all_reduce_mean_
from pcdarts.supernet import Supernet

Loss = Callable[[Tensor, Tensor], Tensor]


class Architect:
    """Owns the arch optimiser; ``step`` does one architecture update in place."""

    def __init__(self, model: Supernet, criterion: Loss, config: ArchitectConfig) -> None:
        self.model = model
        self.criterion = criterion
        self.config = config
        self.optimizer = torch.optim.Adam(
            model.arch_parameters(),
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )

    def step(
        self,
        x_arch: Tensor,
        y_arch: Tensor,
        x_train: Tensor | None = None,
        y_train: Tensor | None = None,
        eta: float = 0.0,
        weight_optimizer: torch.optim.Optimizer | None = None,
    ) -> Tensor:
        """One arch update; returns the (detached) arch-split loss before the update.

        Second order needs the weight batch (x_train, y_train), the current weight lr
        ``eta`` and the weight optimiser (for its momentum and weight decay).
        """
        arch = self.model.arch_parameters()
        if self.config.second_order:
            if x_train is None or y_train is None or weight_optimizer is None:
                raise ValueError(
                    "second-order arch step needs x_train, y_train and the weight optimizer"
                )
            loss, grads = self._unrolled_grads(
                x_arch, y_arch, x_train, y_train, eta, weight_optimizer
            )
        else:
            loss = self.criterion(self.model(x_arch), y_arch)
            # Only arch gradients: the weight gradients of this pass would be thrown away.
            grads = list(torch.autograd.grad(loss, arch))
        # Under torch.distributed: the mean over ranks, so every rank takes the same step.
        all_reduce_mean_(grads)
        for p, g in zip(arch, grads, strict=True):
            p.grad = g
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(arch, self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _unrolled_grads(
        self,
        x_arch: Tensor,
        y_arch: Tensor,
        x_train: Tensor,
        y_train: Tensor,
        eta: float,
        weight_optimizer: torch.optim.Optimizer,
    ) -> tuple[Tensor, list[Tensor]]:
        model = self.model
        arch = model.arch_parameters()
        weights = list(model.weight_parameters())
        momentum, wd = _sgd_hyperparams(weight_optimizer)
        backup = [w.detach().clone() for w in weights]

        # w' = w - eta * (momentum * buf + dL_train/dw + wd * w)
        train_loss = self.criterion(model(x_train), y_train)
        dtheta = torch.autograd.grad(train_loss, weights)
        with torch.no_grad():
            for w, g in zip(weights, dtheta, strict=True):
                buf = weight_optimizer.state.get(w, {}).get("momentum_buffer")
                step = g + wd * w
                if buf is not None:
                    step = step + momentum * buf
                w.sub_(eta * step)

        # The reference evaluates the unrolled weights in a throw-away copy: keep BN stats.
        buffers = [b.detach().clone() for b in model.buffers()]
        loss = self.criterion(model(x_arch), y_arch)
        grads = torch.autograd.grad(loss, arch + weights)
        dalpha, vector = list(grads[: len(arch)]), grads[len(arch) :]
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
            for w, saved in zip(weights, backup, strict=True):
                w.copy_(saved)

        implicit = self._hessian_vector_product(vector, x_train, y_train)
        return loss, [g - eta * ig for g, ig in zip(dalpha, implicit, strict=True)]

    def _hessian_vector_product(
        self, vector: tuple[Tensor, ...], x: Tensor, y: Tensor
    ) -> list[Tensor]:
        """(d/dalpha dL_train/dw) . v by central differences around the current weights."""
        weights = list(self.model.weight_parameters())
        arch = self.model.arch_parameters()
        r = self.config.hvp_eps / torch.cat([v.reshape(-1) for v in vector]).norm()

        def shift(scale: float) -> None:
            with torch.no_grad():
                for w, v in zip(weights, vector, strict=True):
                    w.add_(v, alpha=float(scale * r))

        shift(1.0)
        grads_p = torch.autograd.grad(self.criterion(self.model(x), y), arch)
        shift(-2.0)
        grads_n = torch.autograd.grad(self.criterion(self.model(x), y), arch)
        shift(1.0)
        return [(gp - gn) / (2 * r) for gp, gn in zip(grads_p, grads_n, strict=True)]


def _sgd_hyperparams(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    group = optimizer.param_groups[0]
    return float(group.get("momentum", 0.0)), float(group.get("weight_decay", 0.0))
