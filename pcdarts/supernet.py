"""The PC-DARTS supernet: partial channel connections (method §2) + edge normalization (§3).

One implementation for CIFAR and ImageNet; they differ only in the stem (see
:mod:`pcdarts.stems`) and in K. :class:`SearchCell`'s forward runs edge by edge, the
straightforward oracle; :class:`pcdarts.fused.FusedSearchCell`, the default cell that
:func:`pcdarts.create_model` picks, computes the same grouped by input state, reading the
edges through the accessors below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdarts.config import CIFAR10_CLASSES, SupernetOptions
from pcdarts.derivation import derivation_margin, derive_genotype, edge_weights
from pcdarts.genotypes import Genotype
from pcdarts.ops import (
    PRIMITIVES,
    DilConv,
    FactorizedReduce,
    PreActivated,
    ReLUConvBN,
    SepConv,
    build_op,
)
from pcdarts.space import NODES, edges_per_cell, reduction_cells
from pcdarts.stems import build_stem

ARCH_INIT_SCALE = 1e-3  # alphas and betas start at 1e-3 * N(0, 1) (method §3, reference code)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(N, C, H, W) -> (N, C, H, W): view as (N, g, C/g, H, W), swap the channel axes."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedOp(nn.Module):
    """One supernet edge: the alpha-weighted sum of all primitives on 1/K of the channels.

    The first C/K channels go through the ops; the rest bypass them (2x2 max-pooled on a
    stride-2 edge), are concatenated after the processed part, and the result is
    channel-shuffled with K groups so the next edge sees other channels (method §2).
    """

    def __init__(self, channels: int, stride: int, k: int) -> None:
        super().__init__()
        if channels % k:
            raise ValueError(f"K={k} must divide the edge's {channels} channels")
        self.k = k
        self.stride = stride
        c_part = channels // k
        self._ops = nn.ModuleList()
        for primitive in PRIMITIVES:
            op = build_op(primitive, c_part, stride, affine=False)
            if "pool" in primitive:  # supernet pools are followed by a BN (method §1)
                op = nn.Sequential(op, nn.BatchNorm2d(c_part, affine=False))
            self._ops.append(op)
        self.mp = nn.MaxPool2d(2, 2)
        # 'none' adds exact zeros and takes no gradient: skipping it changes no value.
        self._active = [i for i, p in enumerate(PRIMITIVES) if p != "none"]
        self._any_preact = any(isinstance(op, PreActivated) for op in self._ops)

    def pool(self, name: str) -> tuple[nn.Module, nn.BatchNorm2d]:
        """The pool primitive ``name`` and the BN that follows it (method §1)."""
        op = self._ops[PRIMITIVES.index(name)]
        assert isinstance(op, nn.Sequential) and isinstance(op[1], nn.BatchNorm2d)
        return op[0], op[1]

    def conv_chain(self, name: str) -> nn.Sequential:
        """The layers of the sep/dil conv primitive ``name``, its leading ReLU first."""
        op = self._ops[PRIMITIVES.index(name)]
        assert isinstance(op, SepConv | DilConv)
        return op.op

    def reduce_skip(self) -> FactorizedReduce:
        """skip_connect on a stride-2 edge: a FactorizedReduce (method §1)."""
        op = self._ops[PRIMITIVES.index("skip_connect")]
        assert isinstance(op, FactorizedReduce), "skip_connect is the identity at stride 1"
        return op

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """x: (N, C, H, W), weights: (8,) softmaxed alphas -> (N, C, H/s, W/s)."""
        n, c = x.shape[:2]
        c_part = c // self.k
        # split/unbind rather than indexing: their backward is one cat/stack instead of a
        # zero-filled full-size gradient per slice that then has to be summed.
        x_in, x_bypass = x.split([c_part, c - c_part], dim=1)
        w = weights.unbind(0)
        x_relu = torch.relu(x_in) if self._any_preact else x_in  # one ReLU for all ops
        out: Tensor | None = None
        for i in self._active:
            op = self._ops[i]
            y = op.forward_preactivated(x_relu) if isinstance(op, PreActivated) else op(x_in)
            term = w[i] * y
            out = term if out is None else out + term
        assert out is not None
        if self.k == 1:
            return out
        if self.stride > 1:
            x_bypass = self.mp(x_bypass)
        # channel_shuffle(cat([out, x_bypass]), k) in one copy: output channel j*k + g is
        # channel j of group g, group 0 being ``out`` and groups 1.. the bypassed channels.
        h, w_ = out.shape[2:]
        bypass = x_bypass.view(n, self.k - 1, c_part, h, w_).transpose(1, 2)
        return torch.cat([out.unsqueeze(2), bypass], dim=2).view(n, c, h, w_)


class SearchCell(nn.Module):
    """A supernet cell: 2 inputs, ``steps`` nodes, each fed by a MixedOp from all earlier.

    Its forward runs one MixedOp per edge: the oracle of the grouped forward of
    :class:`pcdarts.fused.FusedSearchCell`, which reads the edges through :meth:`edge`.
    """

    def __init__(
        self,
        steps: int,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        k: int,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.k = k  # partial-channel K of every edge (method §2)
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList(
            MixedOp(channels, 2 if reduction and j < 2 else 1, k)
            for i in range(steps)
            for j in range(2 + i)
        )

    def forward(
        self, s0: Tensor, s1: Tensor, weights: Tensor, edge_weights: Tensor | None
    ) -> Tensor:
        """weights: (E, 8) softmaxed alphas; edge_weights: (E,) the node-softmaxed betas
        (method §3), or None (EN off) -> (N, steps * C, H/s, W/s), one MixedOp per edge."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        # unbind once per cell: its backward is one stack, not a zero-filled (E, 8) per edge
        w_ops = weights.unbind(0)
        w_edges = edge_weights.unbind(0) if edge_weights is not None else None
        offset = 0
        for _ in range(self.steps):
            node: Tensor | None = None
            for j, h in enumerate(states):
                y = self._ops[offset + j](h, w_ops[offset + j])
                if w_edges is not None:
                    y = w_edges[offset + j] * y
                node = y if node is None else node + y
            assert node is not None
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self.steps :], dim=1)

    def edge(self, index: int) -> MixedOp:
        """The MixedOp of edge ``index`` (the row of the alphas, in node order)."""
        op = self._ops[index]
        assert isinstance(op, MixedOp)
        return op


@dataclass(frozen=True)
class SupernetConfig(SupernetOptions):
    """The search network; defaults are the CIFAR-10 supernet (method §5). Its size, K and
    EN are :class:`~pcdarts.config.SupernetOptions` (C, layers, k, edge_norm)."""

    stem: str = "cifar"  # method §5: "cifar" (3x3 conv to 3C) or "imagenet" (three convs)
    num_classes: int = CIFAR10_CLASSES  # 10 CIFAR-10, 1000 ImageNet
    steps: int = NODES  # intermediate nodes per cell (method §1)
    stem_multiplier: int = 3  # the CIFAR stem's width is 3C (method §5)
    # The cell create_model builds: pcdarts.fused.FusedSearchCell (grouped by input state);
    # False: SearchCell, edge by edge (the oracle; same modules, same state dict)
    fused: bool = True


class Supernet(nn.Module):
    """The PC-DARTS search network (method §1-3).

    Architecture weights (``alphas_*`` (E, 8), ``betas_*`` (E,)) are registered
    parameters, shared by all cells of a type; :meth:`arch_parameters` and
    :meth:`weight_parameters` partition :meth:`parameters`. Its cells are ``cell_type``'s:
    :func:`pcdarts.create_model` passes the fused cell unless ``config.fused`` is False.
    """

    def __init__(self, config: SupernetConfig, cell_type: type[SearchCell] = SearchCell) -> None:
        super().__init__()
        steps, layers, k = config.steps, config.layers, config.k
        self.steps = steps
        self.edge_norm = edge_norm = config.edge_norm
        self.stem, c_stem, reduction_prev = build_stem(
            config.stem, config.C, config.stem_multiplier, affine=True
        )
        c_prev_prev, c_prev, c_curr = c_stem, c_stem, config.C
        self.cells = nn.ModuleList()
        self._reductions: list[bool] = []
        reduction_at = reduction_cells(layers)
        for i in range(layers):
            reduction = i in reduction_at
            if reduction:
                c_curr *= 2
            self.cells.append(
                cell_type(steps, c_prev_prev, c_prev, c_curr, reduction, reduction_prev, k)
            )
            self._reductions.append(reduction)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, steps * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)

        num_edges = edges_per_cell(steps)
        num_ops = len(PRIMITIVES)
        self.alphas_normal = nn.Parameter(ARCH_INIT_SCALE * torch.randn(num_edges, num_ops))
        self.alphas_reduce = nn.Parameter(ARCH_INIT_SCALE * torch.randn(num_edges, num_ops))
        self._arch_names: tuple[str, ...] = ("alphas_normal", "alphas_reduce")
        if edge_norm:  # without EN there are no betas (all edge weights are 1)
            self.betas_normal = nn.Parameter(ARCH_INIT_SCALE * torch.randn(num_edges))
            self.betas_reduce = nn.Parameter(ARCH_INIT_SCALE * torch.randn(num_edges))
            self._arch_names += ("betas_normal", "betas_reduce")

    def arch_parameters(self) -> list[nn.Parameter]:
        """alphas_normal, alphas_reduce, then betas_normal, betas_reduce when EN is on."""
        return [getattr(self, name) for name in self._arch_names]

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if n not in self._arch_names)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) -> logits (N, classes)."""
        weights = {
            False: F.softmax(self.alphas_normal, dim=-1),
            True: F.softmax(self.alphas_reduce, dim=-1),
        }
        edge_w: dict[bool, Tensor | None] = {False: None, True: None}
        if self.edge_norm:
            edge_w = {
                False: edge_weights(self.betas_normal),
                True: edge_weights(self.betas_reduce),
            }
        s0, s1 = self.stem(x)
        for cell, reduction in zip(self.cells, self._reductions, strict=True):
            s0, s1 = s1, cell(s0, s1, weights[reduction], edge_w[reduction])
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))

    @torch.no_grad()
    def genotype(self) -> Genotype:
        """The discrete cells the current architecture weights select (method §4)."""
        return derive_genotype(self.alphas_normal, self.alphas_reduce, *self._betas())

    def derivation_margin(self) -> float:
        """How clearly :meth:`genotype` decides: the smallest lead of one of its choices over
        the runner-up (:func:`~pcdarts.derivation.derivation_margin`)."""
        return derivation_margin(self.alphas_normal, self.alphas_reduce, *self._betas())

    def _betas(self) -> tuple[Tensor, Tensor] | tuple[None, None]:
        return (self.betas_normal, self.betas_reduce) if self.edge_norm else (None, None)
