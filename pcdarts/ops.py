"""The eight DARTS primitives (method §1) and the blocks they are made of.

Module trees mirror the reference implementation (``op.<n>`` sequences, ``conv_1``/
``conv_2``/``bn`` in FactorizedReduce) so that its state dicts load by structure.

Ops whose first layer is a ReLU (sep/dil convs, FactorizedReduce) expose
:meth:`forward_preactivated`, which skips that ReLU: the supernet applies one ReLU to an
edge input and feeds it to all of them, which gives bit-identical outputs while keeping
one activation for backward instead of five.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch
from torch import Tensor, nn

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The DARTS search space, in alpha-column order (method §1)."""


class PreActivated(nn.Module):
    """An op that starts with a ReLU; ``forward_preactivated`` takes ``relu(x)`` instead.

    Subclasses either hold their layers in ``self.op`` (ReLU first) or override
    :meth:`first_relu`.
    """

    op: nn.Sequential

    def forward_preactivated(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def first_relu(self) -> nn.Module:
        return self.op[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preactivated(self.first_relu()(x))


class ReLUConvBN(PreActivated):
    """ReLU -> conv -> BN; the cell preprocessing block."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    @property
    def bn(self) -> nn.Module:
        """The closing BatchNorm (a SyncBatchNorm once converted)."""
        return self.op[2]

    def forward_preactivated(self, x: Tensor) -> Tensor:
        return self.op[2](self.op[1](x))


class DilConv(PreActivated):
    """ReLU -> depthwise dilated conv -> 1x1 conv -> BN (method §1, ``dil_conv_kxk``)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in,
                c_in,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=c_in,
                bias=False,
            ),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward_preactivated(self, x: Tensor) -> Tensor:
        return self.op[3](self.op[2](self.op[1](x)))


class SepConv(PreActivated):
    """Two stacked (ReLU, depthwise conv, 1x1 conv, BN); only the first is strided."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c_in, c_in, kernel_size, stride=stride, padding=padding, groups=c_in, bias=False
            ),
            nn.Conv2d(c_in, c_in, kernel_size=1, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=1, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward_preactivated(self, x: Tensor) -> Tensor:
        # Not ``self.op[1:](x)``: slicing a Sequential builds a new module on every call.
        for layer in islice(self.op, 1, None):
            x = layer(x)
        return x


class FactorizedReduce(PreActivated):
    """ReLU, two 1x1 stride-2 convs (the second on the input shifted by one pixel), BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(
                f"FactorizedReduce needs an even number of output channels, got {c_out}"
            )
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def first_relu(self) -> nn.Module:
        return self.relu

    def forward_preactivated(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -> (N, C_out, H/2, W/2); H and W must be even.
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros at the output resolution."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


OpFactory = Callable[[int, int, bool], nn.Module]

OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "skip_connect": lambda c, stride, affine: (
        Identity() if stride == 1 else FactorizedReduce(c, c, affine=affine)
    ),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine=affine),
}
"""Op registry: name -> factory(channels, stride, affine)."""


def build_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Build primitive ``name``; unknown names fail with the list of known ones."""
    try:
        factory = OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(OPS)}") from None
    return factory(channels, stride, affine)


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Drop whole samples of a branch with probability ``drop_prob``, rescaling the rest.

    x: (N, C, H, W). The mask is drawn on ``x``'s device.
    """
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x / keep_prob * mask
