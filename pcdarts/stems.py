"""Network stems: the only structural difference between CIFAR and ImageNet networks.

A stem maps images to the two inputs (s0, s1) of the first cell.
"""

from __future__ import annotations

from torch import Tensor, nn


class CifarStem(nn.Sequential):
    """3x3 conv to ``stem_multiplier * C`` channels + BN; s0 = s1 (method §5)."""

    stride = 1  # s1 relative to the image

    def __init__(self, c_out: int, affine: bool = True) -> None:
        super().__init__(
            nn.Conv2d(3, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, affine=affine)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = super().forward(x)  # (N, 3, H, W) -> (N, C_out, H, W)
        return s, s


class ImageNetStem(nn.Module):
    """Three stride-2 3x3 convs (224 -> 28): s0 after two, s1 after three (method §5)."""

    stride = 8  # s1 relative to the image

    def __init__(self, channels: int, affine: bool = True) -> None:
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2, affine=affine),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels, affine=affine),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels, affine=affine),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s0 = self.stem0(x)  # (N, C, H/4, W/4)
        return s0, self.stem1(s0)  # s1: (N, C, H/8, W/8)


def build_stem(
    kind: str, channels: int, stem_multiplier: int, affine: bool = True
) -> tuple[CifarStem | ImageNetStem, int, bool]:
    """Return (stem, its output channels, whether s0 is larger than s1)."""
    if kind == "cifar":
        c_out = stem_multiplier * channels
        return CifarStem(c_out, affine), c_out, False
    if kind == "imagenet":
        return ImageNetStem(channels, affine), channels, True
    raise ValueError(f"unknown stem {kind!r}; known: cifar, imagenet")
