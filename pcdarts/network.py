"""Final (discrete) networks built from a genotype (method §6): one class for CIFAR and ImageNet."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcdarts.config import CIFAR10_CLASSES, NetworkOptions
from pcdarts.genotypes import Genotype, get_genotype
from pcdarts.ops import FactorizedReduce, Identity, ReLUConvBN, build_op, drop_path
from pcdarts.space import reduction_cells
from pcdarts.stems import build_stem

AUX_HIDDEN = (128, 768)  # auxiliary head widths (DARTS reference code)


class Cell(nn.Module):
    """A discrete cell: each node sums two ops applied to earlier states (method §1)."""

    def __init__(
        self,
        genotype: Genotype,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=True)
        gene, concat = (
            (genotype.reduce, genotype.reduce_concat)
            if reduction
            else (genotype.normal, genotype.normal_concat)
        )
        self._ops = nn.ModuleList(
            build_op(name, channels, 2 if reduction and index < 2 else 1, affine=True)
            for name, index in gene
        )
        self._indices = [index for _, index in gene]
        self._concat = list(concat)
        self.multiplier = len(concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            node = []
            for edge in (2 * i, 2 * i + 1):  # not a ModuleList slice: that builds a module
                op = self._ops[edge]
                h = op(states[self._indices[edge]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                node.append(h)
            states.append(node[0] + node[1])
        return torch.cat([states[i] for i in self._concat], dim=1)


def cell_outputs(
    stem: nn.Module,
    cells: nn.ModuleList,
    x: Tensor,
    drop_prob: float = 0.0,
    stop: int | None = None,
) -> Iterator[Tensor]:
    """The one cell-stacking path: x (N, 3, H, W) through ``stem``, then each cell's output
    (N, C_i, H_i, W_i) in turn, of the first ``stop`` cells (all: None). A cell reads the
    outputs of the two before it (the stem gives the first two, method §1). Used by
    :class:`Network` and the detection backbone."""
    s0, s1 = stem(x)
    for cell in islice(cells, stop):  # not a ModuleList slice: that builds a module
        s0, s1 = s1, cell(s0, s1, drop_prob)
        yield s1


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier at 2/3 depth (DARTS): 8x8 inputs on CIFAR, 7x7 on ImageNet.

    ``pool_stride`` is 3 for CIFAR and 2 for ImageNet; the ImageNet head has no BN after
    its second conv (a typo in the DARTS code that the paper's runs kept). Maps smaller
    than the 5x5 pooling window (tiny profiles only) are pooled adaptively to 2x2.
    """

    def __init__(self, c_in: int, num_classes: int, pool_stride: int, second_bn: bool) -> None:
        super().__init__()
        hidden, width = AUX_HIDDEN
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, width, 2, bias=False),
            nn.BatchNorm2d(width) if second_bn else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 5:
            x = F.adaptive_avg_pool2d(F.relu(x), 2)
            x = self.features[2:](x)
        else:
            x = self.features(x)
        return self.classifier(x.flatten(1))


class NetworkOutput(NamedTuple):
    """What :meth:`Network.forward_with_aux` returns (a NamedTuple, as torchvision's
    GoogLeNet outputs, so DDP finds the tensors in it)."""

    logits: Tensor  # (N, classes)
    aux_logits: Tensor | None  # (N, classes) in training mode with the head, else None


@dataclass(frozen=True)
class NetworkConfig(NetworkOptions):
    """A final network; defaults are the CIFAR-10 evaluation network (method §6). Its size
    and auxiliary head are :class:`~pcdarts.config.NetworkOptions` (C, layers, auxiliary)."""

    genotype: Genotype = field(default_factory=lambda: get_genotype("pc_darts_cifar"))  # §7
    stem: str = "cifar"  # method §5: "cifar" (3x3 conv to 3C) or "imagenet" (three convs)
    num_classes: int = CIFAR10_CLASSES  # method §6: 10 CIFAR-10, 1000 ImageNet
    stem_multiplier: int = 3  # the CIFAR stem's width is 3C (method §5)


class Network(nn.Module):
    """The final network: stem, ``layers`` cells (reductions at 1/3 and 2/3), classifier.

    ``forward`` returns the logits, as every model here does; the training loop takes the
    auxiliary head's logits too through :meth:`forward_with_aux`. ``feature_info`` names
    every cell's output (``num_chs``, ``reduction`` relative to the image, ``module``), as
    timm's feature extractors do, for detection backbones. ``drop_path_prob`` is module
    state and saved in the state dict.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        genotype, layers = config.genotype, config.layers
        self.genotype = genotype
        self.drop_path_prob = 0.0
        reduction_at = reduction_cells(layers)
        self._aux_index = reduction_at[1]  # the head reads the second reduction cell (method §6)
        self.stem, c_stem, reduction_prev = build_stem(
            config.stem, config.C, config.stem_multiplier
        )
        c_prev_prev, c_prev, c_curr = c_stem, c_stem, config.C
        stride = self.stem.stride
        self.cells = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []
        c_aux = c_prev
        for i in range(layers):
            reduction = i in reduction_at
            if reduction:
                c_curr *= 2
                stride *= 2
            cell = Cell(genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            self.feature_info.append(
                {"num_chs": c_prev, "reduction": stride, "module": f"cells.{i}"}
            )
            if i == self._aux_index:
                c_aux = c_prev
        self.auxiliary_head: AuxiliaryHead | None = None
        if config.auxiliary:
            cifar = config.stem == "cifar"
            self.auxiliary_head = AuxiliaryHead(
                c_aux, config.num_classes, pool_stride=3 if cifar else 2, second_bn=cifar
            )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3, H, W) -> logits (N, classes)."""
        return self._forward(x, with_aux=False).logits

    def forward_with_aux(self, x: Tensor) -> NetworkOutput:
        """x: (N, 3, H, W) -> logits and auxiliary logits, each (N, classes); the auxiliary
        logits are None in eval mode or without the head (method §6: training only)."""
        return self._forward(x, with_aux=True)

    def _forward(self, x: Tensor, with_aux: bool) -> NetworkOutput:
        logits_aux = None
        aux_index = self._aux_index if with_aux and self.training else -1
        for i, s1 in enumerate(cell_outputs(self.stem, self.cells, x, self.drop_path_prob)):
            if i == aux_index and self.auxiliary_head is not None:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        return NetworkOutput(self.classifier(out.flatten(1)), logits_aux)

    def features(self, x: Tensor, stop: int | None = None) -> list[Tensor]:
        """The output of every cell (of the first ``stop`` cells), (N, C_i, H_i, W_i), as
        ``feature_info`` describes them."""
        return list(cell_outputs(self.stem, self.cells, x, self.drop_path_prob, stop))

    def set_drop_path_prob(self, prob: float) -> None:
        """The drop-path probability of every cell's ops from now on (training only;
        :func:`pcdarts.schedule.drop_path_prob` ramps it over the epochs, method §6)."""
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"drop-path probability must lie in [0, 1), got {prob}")
        self.drop_path_prob = prob

    def get_extra_state(self) -> dict[str, Any]:
        return {"drop_path_prob": self.drop_path_prob, "genotype": self.genotype.to_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = Genotype.from_dict(state["genotype"])
        if saved != self.genotype:
            raise ValueError(f"state dict is for genotype {saved}, this network is {self.genotype}")
        self.drop_path_prob = float(state["drop_path_prob"])
