"""The data layer: transforms, dataset readers, checks, search splits and loaders.

One code path for CIFAR-10 and ImageNet (method §5-6): the differences are the transforms
and the split function. Reading a dataset from a given path is the only I/O here; index
files are produced as JSON text (``indices_to_json``) and written by the stages.

CIFAR-10 is read from its python pickles by :class:`Cifar10Pickles`, not by
``torchvision.datasets.CIFAR10``: torchvision checks the md5 of every batch file even with
``download=False``, so it accepts only the original archive and refuses the embedded
digits stand-in written in the same format. The reader has the same interface (``data``,
``targets``, ``classes``, ``class_to_idx``, PIL image in, transform applied).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms
from torchvision.datasets import ImageFolder, VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.functional import to_pil_image

from pcdarts.errors import UserError

PathLike = str | os.PathLike[str]
Transform = Callable[[Any], Any]
T = TypeVar("T")

# Per-channel statistics of the CIFAR-10 training set (DARTS reference utils.py, CIFAR_MEAN/STD).
CIFAR_MEAN: tuple[float, float, float] = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD: tuple[float, float, float] = (0.24703233, 0.24348505, 0.26158768)
# Standard ImageNet statistics (PC-DARTS reference train_imagenet.py normalize).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

CIFAR_IMAGE_SIZE = 32  # CIFAR-10 images are 32x32 (method §5 "random crop 32 pad 4")
CIFAR_CROP_PADDING = 4  # method §5-6: random crop 32, pad 4
CIFAR_CHANNELS = 3
CIFAR_NUM_CLASSES = 10
IMAGENET_IMAGE_SIZE = 224  # method §5-6: random resized crop 224
IMAGENET_RESIZE_SIZE = 256  # eval resize before the 224 centre crop (reference train_imagenet.py)
IMAGENET_CROP_SCALE_MIN = (
    0.08  # RandomResizedCrop area lower bound (torchvision default, reference)
)
# Colour jitter (brightness, contrast, saturation, hue) of the ImageNet retraining (method §6).
IMAGENET_COLOR_JITTER: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)

# Layout of the CIFAR-10 python archive (torchvision CIFAR10.base_folder/train_list/test_list).
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"
IMAGENET_SPLITS: tuple[str, ...] = ("train", "val")
COCO_SPLITS: tuple[str, ...] = ("train2017", "val2017")
COCO_KEYS: tuple[str, ...] = ("images", "annotations", "categories")
COCO_BOX_TOLERANCE = 1e-3  # pixels; COCO boxes are floats rounded to 2 decimals in the json

# Search splits: CIFAR-10 50/50 weights/arch; ImageNet 10% + 2.5% per class (method §5).
CIFAR_ARCH_FRACTION = 0.5
IMAGENET_WEIGHT_FRACTION = 0.1
IMAGENET_ARCH_FRACTION = 0.025
DECODE_ALL = 0  # decode_images: decode every image (N > 0: a seeded sample of N per split)
DRAFT_SIDE = 32  # the dataset checks decode JPEGs DCT-scaled to >= this side (1/8 the work)
FRACTION_DECIMALS = 9  # rounding before floor(), so 0.7 * 10 is 7 and not 6.999...
NUMPY_SEED_MODULUS = 2**32  # np.random.seed accepts seeds in [0, 2**32)
WORKER_SEED_STREAM = 1  # separates worker seeds from the sampler's permutation seeds

REWRITE = "Re-extract the archive or rewrite the dataset"
DATASETS_HINT = (
    "Point the data root at the dataset, or write the embedded digits stand-in with "
    "stages/embedded_data.py"
)


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing or malformed; the message names the path and the fix."""

    def __init__(self, path: PathLike, problem: str, remedy: str = DATASETS_HINT) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. {remedy}.")


# --------------------------------------------------------------------------- transforms


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
    saturation, hue); the retraining uses ``IMAGENET_COLOR_JITTER`` (method §6), the search
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


# --------------------------------------------------------------------------- CIFAR-10


def _read_pickle(path: Path) -> dict[str, Any]:
    """Unpickle a CIFAR file; keys as str whether it was written by Python 2 or 3."""
    if not path.is_file():
        raise DatasetError(path, "file is missing (expected the CIFAR-10 python format)")
    try:
        with path.open("rb") as f:
            # latin1, as torchvision: the original batches are Python 2 pickles.
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:  # any unpickling failure means a damaged file
        raise DatasetError(path, f"cannot be unpickled ({exc!r})", REWRITE) from exc
    if not isinstance(entry, dict):
        raise DatasetError(path, f"holds a {type(entry).__name__}, not a dict", REWRITE)
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """One batch file -> (data (N, 32, 32, 3) uint8, labels list of N ints in range)."""
    entry = _read_pickle(path)
    if "data" not in entry or "labels" not in entry:
        raise DatasetError(path, f"lacks 'data' or 'labels' (keys: {sorted(entry)})", REWRITE)
    data = np.asarray(entry["data"])
    labels = [int(y) for y in entry["labels"]]
    row = CIFAR_CHANNELS * CIFAR_IMAGE_SIZE * CIFAR_IMAGE_SIZE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        problem = f"data is {data.dtype} {data.shape}, expected uint8 (N, {row})"
        raise DatasetError(path, problem, REWRITE)
    if len(labels) != data.shape[0]:
        raise DatasetError(path, f"{len(labels)} labels for {data.shape[0]} images", REWRITE)
    if labels and not 0 <= min(labels) <= max(labels) < num_classes:
        raise DatasetError(path, f"labels outside [0, {num_classes})", REWRITE)
    # Rows are three 32x32 planes (R, G, B), row-major; to (N, H, W, C) as torchvision.
    planes = data.reshape(-1, CIFAR_CHANNELS, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


def _cifar_folder(root: PathLike) -> Path:
    """The batches folder under ``root``, after checking every expected file is there."""
    folder = Path(root) / CIFAR10_FOLDER
    if not folder.is_dir():
        raise DatasetError(folder, "folder is missing (expected the CIFAR-10 python archive)")
    for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH, CIFAR10_META):
        if not (folder / name).is_file():
            raise DatasetError(folder / name, "file is missing from the CIFAR-10 python folder")
    return folder


def _cifar_classes(folder: Path) -> list[str]:
    meta = _read_pickle(folder / CIFAR10_META)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != CIFAR_NUM_CLASSES:
        problem = f"needs {CIFAR_NUM_CLASSES} 'label_names'"
        raise DatasetError(folder / CIFAR10_META, problem, REWRITE)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class Cifar10Pickles(VisionDataset):
    """CIFAR-10 from its python pickles; the interface of ``torchvision.datasets.CIFAR10``.

    ``data`` is (N, 32, 32, 3) uint8, ``targets`` a list of N ints; items are
    ``(transform(PIL image), target)``.
    """

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        transform: Transform | None = None,
        target_transform: Transform | None = None,
    ) -> None:
        super().__init__(str(root), transform=transform, target_transform=target_transform)
        self.train = train
        folder = _cifar_folder(root)
        self.classes = _cifar_classes(folder)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        names = CIFAR10_TRAIN_BATCHES if train else (CIFAR10_TEST_BATCH,)
        batches = [_read_cifar_batch(folder / n, len(self.classes)) for n in names]
        self.data: np.ndarray = np.concatenate([b[0] for b in batches])
        self.targets: list[int] = [y for b in batches for y in b[1]]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img: Any = to_pil_image(self.data[index])
        target: Any = self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __len__(self) -> int:
        return len(self.targets)

    def extra_repr(self) -> str:
        return f"Split: {'Train' if self.train else 'Test'}"


def load_cifar10(root: PathLike, train: bool, transform: Transform | None = None) -> Cifar10Pickles:
    """CIFAR-10 train (50k) or test (10k) split under ``root/cifar-10-batches-py``.

    Raises DatasetError naming the missing or damaged file.
    """
    return Cifar10Pickles(root, train=train, transform=transform)


def check_cifar10(root: PathLike) -> dict[str, Any]:
    """Validate CIFAR-10 on disk (all files, shapes, labels) without training.

    Returns ``{"root", "classes", "image_size", "train_images", "test_images",
    "train_class_counts"}``; raises DatasetError otherwise.
    """
    folder = _cifar_folder(root)
    classes = _cifar_classes(folder)
    train_labels: list[int] = []
    for name in CIFAR10_TRAIN_BATCHES:
        train_labels += _read_cifar_batch(folder / name, len(classes))[1]
    test_labels = _read_cifar_batch(folder / CIFAR10_TEST_BATCH, len(classes))[1]
    if not train_labels or not test_labels:
        raise DatasetError(folder, "the train or the test split is empty", "Rewrite the dataset")
    return {
        "root": str(root),
        "classes": classes,
        "image_size": CIFAR_IMAGE_SIZE,
        "train_images": len(train_labels),
        "test_images": len(test_labels),
        "train_class_counts": class_counts(train_labels),
    }


# --------------------------------------------------------------------------- ImageNet


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


def _to_decode(items: Sequence[T], count: int, seed: int) -> list[T]:
    """Every item (``count``: DECODE_ALL or >= len), else a seeded sample of ``count``."""
    if count == DECODE_ALL or len(items) <= count:
        return list(items)
    picks = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in picks]


def _decode(path: Path) -> tuple[int, int]:
    """Decode an image cheaply (JPEG: DCT-scaled to DRAFT_SIDE, still reading every byte);
    returns its (width, height). DatasetError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))  # a no-op for other formats
            image.load()
    except Exception as exc:  # PIL raises many types for damaged files
        raise DatasetError(
            path, f"cannot be decoded ({exc!r})", "Replace or remove the file"
        ) from exc
    return int(width), int(height)


def _decode_all(paths: Sequence[Path], workers: int) -> list[tuple[int, int]]:
    """Sizes of ``paths``, decoded by ``workers`` threads (PIL releases the GIL); the first
    damaged file in order raises."""
    if workers <= 1:
        return [_decode(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_decode, paths))


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
        chosen = _to_decode(files, decode_images, seed)
        for size in _decode_all(chosen, workers):
            sides += size
        summary[f"{split}_images"] = len(files)
        summary[f"{split}_decoded"] = len(chosen)
    if wnids["train"] != wnids["val"]:
        differ = sorted(set(wnids["train"]) ^ set(wnids["val"]))
        raise DatasetError(root, f"train/ and val/ have different class folders ({differ[:5]} ...)")
    summary["classes"] = wnids["train"]
    summary["min_side"], summary["max_side"] = min(sides), max(sides)
    return summary


# --------------------------------------------------------------------------- COCO


def _coco_split(
    root: Path, split: str, decode_images: int, seed: int, workers: int
) -> tuple[dict[str, int], list[str]]:
    """Check one COCO split; returns ({"images", "annotations", "decoded"}, category names)."""
    ann_path = root / "annotations" / f"instances_{split}.json"
    if not ann_path.is_file():
        raise DatasetError(ann_path, "annotation file is missing (expected the COCO 2017 layout)")
    try:
        coco = json.loads(ann_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(ann_path, f"does not parse as JSON ({exc})", REWRITE) from exc
    if not isinstance(coco, dict) or not all(k in coco for k in COCO_KEYS):
        raise DatasetError(ann_path, "needs 'images', 'annotations' and 'categories'", REWRITE)
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    if not categories:
        raise DatasetError(ann_path, "has no categories", REWRITE)
    image_dir = root / split
    if not image_dir.is_dir():
        raise DatasetError(image_dir, "image folder is missing (expected the COCO 2017 layout)")
    on_disk = set(os.listdir(image_dir))  # one listing instead of 100k stat calls
    sizes: dict[int, tuple[float, float]] = {}
    for img in coco["images"]:
        if img["file_name"] not in on_disk:
            problem = f"image {img['id']} of {ann_path.name} is missing"
            raise DatasetError(image_dir / img["file_name"], problem, REWRITE)
        sizes[img["id"]] = (img["width"], img["height"])
    for ann in coco["annotations"]:
        _check_annotation(ann, sizes, categories, ann_path)
    chosen = _to_decode(coco["images"], decode_images, seed)
    paths = [image_dir / img["file_name"] for img in chosen]
    for img, path, size in zip(chosen, paths, _decode_all(paths, workers), strict=True):
        if size != (img["width"], img["height"]):
            expected = f"{img['width']}x{img['height']}"
            raise DatasetError(path, f"size differs from {ann_path.name} ({expected})", REWRITE)
    counts = {
        "images": len(coco["images"]),
        "annotations": len(coco["annotations"]),
        "decoded": len(chosen),
    }
    return counts, [categories[k] for k in sorted(categories)]


def _check_annotation(
    ann: dict[str, Any],
    sizes: dict[int, tuple[float, float]],
    categories: dict[int, str],
    path: Path,
) -> None:
    """One instance annotation: known image and category, a box inside its image."""
    where = f"annotation {ann.get('id')}"
    if ann.get("image_id") not in sizes:
        raise DatasetError(path, f"{where} refers to unknown image {ann.get('image_id')}", REWRITE)
    if ann.get("category_id") not in categories:
        raise DatasetError(path, f"{where} has unknown category {ann.get('category_id')}", REWRITE)
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DatasetError(path, f"{where} bbox is not [x, y, w, h]", REWRITE)
    x, y, w, h = bbox
    width, height = sizes[ann["image_id"]]
    tol = COCO_BOX_TOLERANCE
    if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        problem = f"{where} box {bbox} is empty or outside its {width}x{height} image"
        raise DatasetError(path, problem, REWRITE)


def check_coco(
    root: PathLike, *, decode_images: int = DECODE_ALL, seed: int = 0, workers: int = 1
) -> dict[str, Any]:
    """Validate a COCO 2017 detection dataset on disk (train2017 and val2017).

    Both instance json files parse, every referenced image exists, every box lies inside
    its image, categories are non-empty and the same in both; every listed image
    (``decode_images`` = DECODE_ALL) or a seeded sample of ``decode_images`` per split is
    decoded and its size compared. Returns ``{"root", "categories", "train2017": {"images",
    "annotations", "decoded"}, "val2017": {...}}``.
    """
    root = Path(root)
    summary: dict[str, Any] = {"root": str(root)}
    names: list[list[str]] = []
    for split in COCO_SPLITS:
        try:
            summary[split], split_names = _coco_split(root, split, decode_images, seed, workers)
        except (KeyError, TypeError) as exc:  # a record lacks a field or has the wrong type
            ann_path = root / "annotations" / f"instances_{split}.json"
            raise DatasetError(ann_path, f"has a malformed record ({exc!r})", REWRITE) from exc
        names.append(split_names)
    if names[0] != names[1]:
        raise DatasetError(root / "annotations", "train2017 and val2017 have different categories")
    summary["categories"] = names[0]
    return summary


# --------------------------------------------------------------------------- splits


def _floor_fraction(fraction: float, n: int) -> int:
    """floor(fraction * n), immune to float noise such as 0.7 * 10 = 6.999..."""
    return math.floor(round(fraction * n, FRACTION_DECIMALS))


def split_weight_arch(
    n: int, arch_fraction: float = CIFAR_ARCH_FRACTION, seed: int = 0, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 search split (method §5): disjoint (weight, arch) index arrays, sorted.

    The weight split takes floor((1 - arch_fraction) * n) samples, as the reference
    (``split = floor(portion * num_train)``). The reference takes the first part for
    weights and the rest for arch, unshuffled; we draw a seeded permutation instead, so the
    split does not follow the file order. ``shuffle=False`` reproduces the reference.
    """
    if not 0.0 < arch_fraction < 1.0:
        raise ValueError(f"arch_fraction must lie in (0, 1), got {arch_fraction}")
    n_weight = _floor_fraction(1.0 - arch_fraction, n)
    if n_weight < 1 or n_weight >= n:
        raise ValueError(f"cannot split {n} samples with arch_fraction {arch_fraction}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return np.sort(order[:n_weight]).astype(np.int64), np.sort(order[n_weight:]).astype(np.int64)


def split_per_class(
    targets: Sequence[int] | np.ndarray,
    weight_fraction: float = IMAGENET_WEIGHT_FRACTION,
    arch_fraction: float = IMAGENET_ARCH_FRACTION,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet search subsets (method §5): disjoint (weight, arch) index arrays, sorted.

    Per class with n samples: floor(weight_fraction * n) for weights and another
    floor(arch_fraction * n) for arch, each at least one when n >= 2 (a class of one
    sample goes to weights). Seeded: one numpy Generator visits the classes in label order.
    """
    if weight_fraction <= 0 or arch_fraction <= 0 or weight_fraction + arch_fraction > 1:
        raise ValueError(
            f"need positive fractions summing to at most 1, got {weight_fraction} + {arch_fraction}"
        )
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    weight: list[np.ndarray] = []
    arch: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        n_arch = 0 if n < 2 else min(max(1, _floor_fraction(arch_fraction, n)), n - 1)
        n_weight = min(max(1, _floor_fraction(weight_fraction, n)), n - n_arch)
        weight.append(members[:n_weight])
        arch.append(members[n_weight : n_weight + n_arch])
    as_index = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64)  # noqa: E731
    return as_index(weight), as_index(arch)


def class_counts(targets: Sequence[int] | np.ndarray) -> dict[int, int]:
    """Number of samples per label, labels ascending."""
    counts = Counter(int(y) for y in np.asarray(targets).ravel())
    return dict(sorted(counts.items()))


def indices_to_json(weight_idx: np.ndarray, arch_idx: np.ndarray, meta: dict[str, Any]) -> str:
    """A split as JSON text (``{"meta", "weight", "arch"}``), byte-stable for equal input."""
    if np.intersect1d(weight_idx, arch_idx).size:
        raise ValueError("weight and arch indices overlap")
    payload = {
        "meta": meta,
        "weight": [int(i) for i in weight_idx],
        "arch": [int(i) for i in arch_idx],
    }
    return json.dumps(payload, sort_keys=True, indent=1) + "\n"


def indices_from_json(text: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Inverse of :func:`indices_to_json`: (weight (Nw,) int64, arch (Na,) int64, meta)."""
    payload = json.loads(text)
    weight = np.asarray(payload["weight"], dtype=np.int64)
    arch = np.asarray(payload["arch"], dtype=np.int64)
    if np.intersect1d(weight, arch).size or (weight < 0).any() or (arch < 0).any():
        raise ValueError("split file holds overlapping or negative indices")
    return weight, arch, dict(payload["meta"])


# --------------------------------------------------------------------------- loaders


class EpochSampler(Sampler[int]):
    """Yields ``indices`` in an order fixed by (seed, epoch); sharded under torch.distributed.

    The loop calls ``set_epoch(epoch)`` before each epoch (as with DistributedSampler), so
    the order of epoch e is the same in a fresh run and in one resumed at e. When a process
    group is initialised, the (shuffled) list is padded by wrapping around to a multiple of
    the world size and rank r takes every world_size-th item from r, as DistributedSampler.
    ``worker_generator`` (set by :func:`make_loader`) is the DataLoader's generator; it is
    reseeded per epoch so the worker seeds, hence worker-side augmentation, resume too.
    """

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        worker_generator: torch.Generator | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        self.num_replicas, self.rank = num_replicas, rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside [0, {self.num_replicas})")
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if self.indices.ndim != 1 or len(self.indices) == 0:
            raise ValueError("EpochSampler needs a non-empty 1-D index list")
        self.shuffle = shuffle
        self.seed = seed
        self.worker_generator = worker_generator
        self.num_samples = math.ceil(len(self.indices) / self.num_replicas)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Fix the order of the next pass to that of ``epoch``."""
        self.epoch = epoch
        if self.worker_generator is not None:
            key = (self.seed, epoch, self.rank, WORKER_SEED_STREAM)
            self.worker_generator.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def __iter__(self) -> Iterator[int]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # as DistributedSampler: seed + epoch
            order = order[torch.randperm(len(order), generator=g)]
        total = self.num_samples * self.num_replicas
        if total > len(order):  # pad by wrapping so every rank gets num_samples
            reps = math.ceil(total / len(order))
            order = order.repeat(reps)[:total]
        return iter(order[self.rank : total : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    torch seeds each worker with base_seed + worker_id; numpy and ``random`` are not, so
    without this every worker would repeat the same numpy draws.
    """
    seed = torch.initial_seed() % NUMPY_SEED_MODULUS
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what worker code uses
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    indices: np.ndarray | None,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A DataLoader over ``dataset[indices]`` (all of it when None) with an EpochSampler.

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch: the order and the worker
    seeds are then functions of (seed, epoch, rank) only. With ``num_workers=0`` the
    augmentation draws from the main process's torch RNG, which checkpoints save.
    """
    if indices is None:
        indices = np.arange(len(dataset))  # type: ignore[arg-type]
    generator = torch.Generator()
    sampler = EpochSampler(indices, shuffle=shuffle, seed=seed, worker_generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=generator,
    )


# --------------------------------------------------------------------------- one entry point

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
