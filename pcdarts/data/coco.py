"""The check of a COCO-format detection dataset (images and instances json per split)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pcdarts.data.checks import (
    DECODE_ALL,
    REWRITE,
    DatasetError,
    PathLike,
    decode_sizes,
    sample_to_decode,
)

COCO_SPLITS: tuple[str, ...] = ("train2017", "val2017")
COCO_KEYS: tuple[str, ...] = ("images", "annotations", "categories")
COCO_BOX_TOLERANCE = 1e-3  # pixels; COCO boxes are floats rounded to 2 decimals in the json


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
    chosen = sample_to_decode(coco["images"], decode_images, seed)
    paths = [image_dir / img["file_name"] for img in chosen]
    for img, path, size in zip(chosen, paths, decode_sizes(paths, workers), strict=True):
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
