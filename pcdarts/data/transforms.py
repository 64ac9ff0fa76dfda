"""Training and evaluation transforms of CIFAR-10 and ImageNet (method §5-6), cutout included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision import transforms

from pcdarts.config import (
    CIFAR_CROP_PADDING,
    CIFAR_IMAGE_SIZE,
    IMAGENET_CROP_SCALE_MIN,
    IMAGENET_IMAGE_SIZE,
)

Transform = Callable[[Any], Any]


# Per-channel statistics of the CIFAR-10 training set (DARTS reference utils.py, CIFAR_MEAN/STD).
CIFAR_MEAN: tuple[float, float, float] = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD: tuple[float, float, float] = (0.24703233, 0.24348505, 0.26158768)
# Standard ImageNet statistics (PC-DARTS reference train_imagenet.py normalize).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

IMAGENET_RESIZE_SIZE = 256  # eval resize before the 224 centre crop (reference train_imagenet.py)


class Cutout:
    """DARTS cutout: zero one ``length`` x ``length`` square at a random centre.

    Applied to the normalised (C, H, W) tensor, as in the reference; the square is clipped
    at the borders, so it can be smaller near an edge. Uses the global torch RNG, so
    ``torch.manual_seed`` (and the per-worker seeds of a DataLoader) make it reproducible.
    """

    def __init__(self, length: int) -> None:
        if length <= 0:
            raise ValueError(f"cutout length must be positive, got {length}")
        self.length = length

    def __call__(self, img: Tensor) -> Tensor:
        """(C, H, W) -> (C, H, W), a copy with the square set to zero."""
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, (1,)).item())
        cx = int(torch.randint(w, (1,)).item())
        half = self.length // 2
        y1, y2 = max(cy - half, 0), min(cy + half, h)
        x1, x2 = max(cx - half, 0), min(cx + half, w)
        mask = torch.ones((h, w), dtype=img.dtype, device=img.device)
        mask[y1:y2, x1:x2] = 0
        return img * mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


def cifar_transforms(
    train: bool,
    *,
    image_size: int = CIFAR_IMAGE_SIZE,
    crop_padding: int = CIFAR_CROP_PADDING,
    cutout_length: int = 0,
    hflip: bool = True,
) -> transforms.Compose:
    """CIFAR-10 transforms: PIL image -> normalised (3, image_size, image_size) tensor.

    Train: random crop with padding, horizontal flip, (cutout: 16 for the final network,
    method §6). Eval: none. Tiny profiles train at a smaller ``image_size``; the image is
    resized first in both, so train and eval see the same scale.
    """
    resized = image_size != CIFAR_IMAGE_SIZE
    resize: list[Transform] = [transforms.Resize(image_size)] if resized else []
    tail: list[Transform] = [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)]
    if not train:
        return transforms.Compose(resize + tail)
    augment: list[Transform] = [transforms.RandomCrop(image_size, padding=crop_padding)]
    if hflip:
        augment.append(transforms.RandomHorizontalFlip())
    cutout: list[Transform] = [Cutout(cutout_length)] if cutout_length > 0 else []
    return transforms.Compose(resize + augment + tail + cutout)


def imagenet_transforms(
    train: bool,
    *,
    image_size: int = IMAGENET_IMAGE_SIZE,
    resize_size: int = IMAGENET_RESIZE_SIZE,
    color_jitter: tuple[float, float, float, float] | None = None,
    crop_scale_min: float = IMAGENET_CROP_SCALE_MIN,
    hflip: bool = True,
) -> transforms.Compose:
    """ImageNet transforms: PIL image -> normalised (3, image_size, image_size) tensor.

    Train: random resized crop, flip, optional colour jitter (brightness, contrast,
    saturation, hue); the retraining uses ``pcdarts.config.IMAGENET_COLOR_JITTER`` (method
    §6), the search
    none (method §5). Eval: resize the short side to ``resize_size``, centre crop.
    """
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    tail: list[Transform] = [transforms.ToTensor(), normalize]
    if not train:
        return transforms.Compose(
            [transforms.Resize(resize_size), transforms.CenterCrop(image_size), *tail]
        )
    augment: list[Transform] = [
        transforms.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0)),
    ]
    if hflip:
        augment.append(transforms.RandomHorizontalFlip())
    if color_jitter is not None:
        brightness, contrast, saturation, hue = color_jitter
        augment.append(transforms.ColorJitter(brightness, contrast, saturation, hue))
    return transforms.Compose(augment + tail)
