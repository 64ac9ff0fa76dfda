"""One entry point for the image datasets: :func:`image_dataset` (CIFAR-10 or ImageNet)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from pcdarts.config import CIFAR_CROP_PADDING, IMAGENET_CROP_SCALE_MIN, IMAGENET_IMAGE_SIZE
from pcdarts.data.checks import PathLike
from pcdarts.data.cifar import load_cifar10
from pcdarts.data.imagenet import load_imagenet
from pcdarts.data.transforms import IMAGENET_RESIZE_SIZE, cifar_transforms, imagenet_transforms

DATASETS = ("cifar10", "imagenet")


def image_dataset(
    dataset: str,
    root: PathLike,
    *,
    train: bool,
    augment: bool,
    image_size: int,
    cutout_length: int = 0,
    color_jitter: Sequence[float] | None = None,
    hflip: bool = True,
    crop_padding: int = CIFAR_CROP_PADDING,
    crop_scale_min: float = IMAGENET_CROP_SCALE_MIN,
) -> Dataset[Any]:
    """The train (``train=True``) or test/val split of CIFAR-10 or ImageNet at ``root``.

    One entry point for both datasets: ``augment`` picks the training transforms (the
    search uses them on both its splits, as the reference does), otherwise eval ones.
    """
    if dataset == "cifar10":
        tf = cifar_transforms(
            augment,
            image_size=image_size,
            crop_padding=crop_padding,
            cutout_length=cutout_length,
            hflip=hflip,
        )
        return load_cifar10(root, train=train, transform=tf)
    if dataset == "imagenet":
        jitter = tuple(color_jitter) if color_jitter else None
        tf = imagenet_transforms(
            augment,
            image_size=image_size,
            color_jitter=jitter,  # type: ignore[arg-type]
            crop_scale_min=crop_scale_min,
            hflip=hflip,
            resize_size=round(image_size * IMAGENET_RESIZE_SIZE / IMAGENET_IMAGE_SIZE),
        )
        return load_imagenet(root, "train" if train else "val", transform=tf)
    raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
