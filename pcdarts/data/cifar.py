"""CIFAR-10 from its python pickles: the reader and the check of an extracted archive.

Read by :class:`Cifar10Pickles`, not by ``torchvision.datasets.CIFAR10``: torchvision checks
the md5 of every batch file even with ``download=False``, so it accepts only the original
archive and refuses the embedded digits stand-in written in the same format. The reader has
the same interface (``data``, ``targets``, ``classes``, ``class_to_idx``, PIL image in,
transform applied).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import VisionDataset
from torchvision.transforms.functional import to_pil_image

from pcdarts.config import CIFAR_IMAGE_SIZE
from pcdarts.data.checks import REWRITE, DatasetError, PathLike
from pcdarts.data.splits import class_counts
from pcdarts.data.transforms import Transform

CIFAR_CHANNELS = 3
CIFAR_NUM_CLASSES = 10


# Layout of the CIFAR-10 python archive (torchvision CIFAR10.base_folder/train_list/test_list).
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"


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
