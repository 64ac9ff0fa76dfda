"""ImageNet as class folders (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``): the reader
and the check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from pcdarts.data.checks import DECODE_ALL, DatasetError, PathLike, decode_sizes, sample_to_decode
from pcdarts.data.transforms import Transform

IMAGENET_SPLITS: tuple[str, ...] = ("train", "val")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)  # the extensions ImageFolder accepts


def _class_folders(split_dir: Path) -> list[Path]:
    """Sorted class folders of an ImageFolder split, after checking there are some."""
    if not split_dir.is_dir():
        raise DatasetError(split_dir, "folder is missing (expected ILSVRC2012's <split>/<wnid>/)")
    classes = sorted(Path(e.path) for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise DatasetError(split_dir, "has no class folders (expected one folder per wnid)")
    return classes


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under one class folder, recursively, as ImageFolder finds them."""
    files = [
        Path(dirpath) / name
        for dirpath, _, names in sorted(os.walk(class_dir, followlinks=True))
        for name in sorted(names)
        if _is_image(name)
    ]
    if not files:
        raise DatasetError(class_dir, f"class folder has no {'/'.join(IMG_EXTENSIONS)} images")
    return files


def load_imagenet(root: PathLike, split: str, transform: Transform | None = None) -> ImageFolder:
    """ImageNet ``split`` ("train" or "val") as an ImageFolder on ``root/split``.

    Raises DatasetError if the folder is missing, has no class folders, or a class folder
    has no images.
    """
    if split not in IMAGENET_SPLITS:
        raise ValueError(f"split must be one of {IMAGENET_SPLITS}, got {split!r}")
    split_dir = Path(root) / split
    classes = _class_folders(split_dir)
    # allow_empty: one scan by ImageFolder, then name the first empty class ourselves.
    dataset = ImageFolder(str(split_dir), transform=transform, allow_empty=True)
    present = set(dataset.targets)
    for idx, class_dir in enumerate(classes):
        if idx not in present:
            raise DatasetError(class_dir, f"class folder has no {'/'.join(IMG_EXTENSIONS)} images")
    return dataset


def check_imagenet(
    root: PathLike, *, decode_images: int = DECODE_ALL, seed: int = 0, workers: int = 1
) -> dict[str, Any]:
    """Validate an ILSVRC2012-layout dataset (train/ and val/, same wnids, images decode).

    Counts every file and decodes every image (``decode_images`` = DECODE_ALL) or a seeded
    sample of ``decode_images`` per split. Returns ``{"root", "classes", "train_images",
    "val_images", "train_decoded", "val_decoded", "min_side", "max_side"}``; raises
    DatasetError naming the first missing, empty or undecodable path otherwise.
    """
    summary: dict[str, Any] = {"root": str(root)}
    sides: list[int] = []
    wnids: dict[str, list[str]] = {}
    for split in IMAGENET_SPLITS:
        split_dir = Path(root) / split
        classes = _class_folders(split_dir)
        wnids[split] = [c.name for c in classes]
        files = [f for c in classes for f in _image_files(c)]
        chosen = sample_to_decode(files, decode_images, seed)
        for size in decode_sizes(chosen, workers):
            sides += size
        summary[f"{split}_images"] = len(files)
        summary[f"{split}_decoded"] = len(chosen)
    if wnids["train"] != wnids["val"]:
        differ = sorted(set(wnids["train"]) ^ set(wnids["val"]))
        raise DatasetError(root, f"train/ and val/ have different class folders ({differ[:5]} ...)")
    summary["classes"] = wnids["train"]
    summary["min_side"], summary["max_side"] = min(sides), max(sides)
    return summary
