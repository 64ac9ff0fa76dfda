"""What the dataset checks share: the error naming a path and its fix, and cheap image
decoding of every image or a seeded sample."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from PIL import Image

from pcdarts.errors import UserError

PathLike = str | os.PathLike[str]


T = TypeVar("T")


DECODE_ALL = 0  # decode_images: decode every image (N > 0: a seeded sample of N per split)
DRAFT_SIDE = 32  # the dataset checks decode JPEGs DCT-scaled to >= this side (1/8 the work)


REWRITE = "Re-extract the archive or rewrite the dataset"
DATASETS_HINT = (
    "Point the data root at the dataset, or write the embedded digits stand-in with "
    "python -m pipeline.embedded_data"
)


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing or malformed; the message names the path and the fix."""

    def __init__(self, path: PathLike, problem: str, remedy: str = DATASETS_HINT) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. {remedy}.")


def sample_to_decode(items: Sequence[T], count: int, seed: int) -> list[T]:
    """Every item (``count``: DECODE_ALL or >= len), else a seeded sample of ``count``."""
    if count == DECODE_ALL or len(items) <= count:
        return list(items)
    picks = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in picks]


def decode_size(path: Path) -> tuple[int, int]:
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


def decode_sizes(paths: Sequence[Path], workers: int) -> list[tuple[int, int]]:
    """Sizes of ``paths``, decoded by ``workers`` threads (PIL releases the GIL); the first
    damaged file in order raises."""
    if workers <= 1:
        return [decode_size(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(decode_size, paths))
