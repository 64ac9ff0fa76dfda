"""Stage: write the embedded default dataset in the CIFAR-10, ImageNet and COCO layouts.

The images are scikit-learn's bundled handwritten digits (1797 real 8x8 grey scans of
UCI optdigits, 10 classes), so the whole pipeline runs end to end with no download.
One seeded, per-class split of the 1797 digits into train and test serves all three
formats: no test digit ever appears in a training set. Every output directory is built in
a temporary sibling and renamed into place, so an interrupted run leaves no half dataset.

The same digits can also be written at the paper's shapes (the ``paper`` profile's
``data.embedded``, for a dry run without the real datasets): an ImageNet tree of 1,000
wnid-style class folders of ``imagenet_train_per_class`` / ``imagenet_val_per_class`` images
(class c holds digits of label c mod 10, drawn with repetition) at ILSVRC2012's sizes, and
COCO canvases with COCO 2017's 80 category ids and names (an instance of digit d takes one of
the eight categories c with c mod 10 = d, in id order). Few images, real formats and shapes.

    python -m pipeline.embedded_data --root data/embedded --seed 0
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from pcdarts.data.cifar import (
    CIFAR10_FOLDER,
    CIFAR10_META,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
)
from pipeline.io import atomic_path

CLASS_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
# ImageNet-style synset ids: "n" + 8 digits, as the real wnids (n01440764, ...).
WNIDS: tuple[str, ...] = tuple(f"n{d:08d}" for d in range(len(CLASS_NAMES)))
DIGIT_MAX = 16  # sklearn digits hold counts 0..16 per 8x8 cell (UCI optdigits, 4x4 blocks)
PIXEL_MAX = 255
TEST_FRACTION = 1 / 6  # 1797 -> 1497 train / 300 test
CIFAR_SIZE = 32  # CIFAR-10 images are 32x32x3, stored as 3 row-major planes
PICKLE_PROTOCOL = 4  # fixed, so the bytes do not change with the Python default
JPEG_QUALITY = 95
# COCO canvases: dark noisy background, digits of random tint pasted by maximum.
BACKGROUND_MAX_LEVEL = 48  # canvas base grey in [0, 48): dark, below the digit strokes
BACKGROUND_NOISE_STD = 8.0
DIGIT_TINT_RANGE = (0.7, 1.0)  # per-channel gain of a pasted digit
PLACEMENT_TRIES = 50  # random positions tried before a digit is left out of a crowded canvas
IMAGENET_SIZE = 64  # small, yet large enough for an ImageNet-style stem to downsample
COCO_CANVAS_SIZE = 128
COCO_IMAGES_TRAIN = 400
COCO_IMAGES_VAL = 100
COCO_DIGITS_PER_IMAGE = (1, 4)  # inclusive range of digits pasted on one canvas
COCO_SCALE_RANGE = (16, 48)  # inclusive range of the pasted square's side, pixels
COCO_FIRST_VAL_IMAGE_ID = 1_000_000  # image ids unique over both splits, as in COCO
COCO_DESCRIPTION = "PC-DARTS embedded default: sklearn handwritten digits on noisy canvases"
COCO_FILE_DIGITS = 12  # COCO 2017 file names: 000000000139.jpg
ALL_DIGITS = 0  # imagenet_{train,val}_per_class: every digit of the class, once (10 classes)
# COCO 2017's 80 categories (id, name), as in its instances_*.json: ids 1..90, ten unused.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
)
COCO_CATEGORY_COUNTS = (len(CLASS_NAMES), len(COCO_CATEGORIES))  # the digits', COCO 2017's


# --------------------------------------------------------------------------- helpers


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as ((N, 8, 8) uint8 in 0..255, (N,) int64 labels)."""
    digits = load_digits()
    images = np.round(digits.images * (PIXEL_MAX / DIGIT_MAX)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def split_digits(
    labels: np.ndarray, *, seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: (train indices, test indices), sorted and disjoint."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def upsample(digit: np.ndarray, size: int) -> np.ndarray:
    """(8, 8) uint8 -> (size, size) uint8, bilinear (PIL)."""
    return np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR))


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)  # (H, W) -> (H, W, 3)


def _save_jpeg(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="JPEG", quality=JPEG_QUALITY)


def _dump_pickle(obj: Any, path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=PICKLE_PROTOCOL)


def _split(
    seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 8, 8) uint8, labels (N,), train indices, test indices)."""
    images, labels = load_digits_uint8()
    train, test = split_digits(labels, seed=seed, test_fraction=test_fraction)
    return images, labels, train, test


# --------------------------------------------------------------------------- CIFAR-10


def _cifar_batch(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, label: str) -> dict:
    """A CIFAR batch dict: data (N, 3072) uint8 = R, G, B planes of 32x32, row-major."""
    rgb = np.stack([_grey_to_rgb(upsample(images[i], CIFAR_SIZE)) for i in idx])  # (N, 32, 32, 3)
    return {
        "batch_label": label,
        "labels": [int(labels[i]) for i in idx],
        "data": np.ascontiguousarray(rgb.transpose(0, 3, 1, 2).reshape(len(idx), -1)),
        "filenames": [f"{CLASS_NAMES[labels[i]]}_s_{i:06d}.png" for i in idx],
    }


def _write_cifar10(root: Path, seed: int, test_fraction: float) -> dict[str, Any]:
    images, labels, train, test = _split(seed, test_fraction)
    # The original batches are in random order; ours too, from the seed.
    order = np.random.default_rng(seed).permutation(train)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    chunks = np.array_split(order, len(CIFAR10_TRAIN_BATCHES))
    for k, (name, chunk) in enumerate(zip(CIFAR10_TRAIN_BATCHES, chunks, strict=True), 1):
        label = f"training batch {k} of {len(chunks)}"
        _dump_pickle(_cifar_batch(images, labels, chunk, label), folder / name)
    test_batch = _cifar_batch(images, labels, test, "testing batch 1 of 1")
    _dump_pickle(test_batch, folder / CIFAR10_TEST_BATCH)
    meta = {
        "num_cases_per_batch": max(len(c) for c in chunks),
        "label_names": list(CLASS_NAMES),
        "num_vis": CIFAR_SIZE * CIFAR_SIZE * 3,
    }
    _dump_pickle(meta, folder / CIFAR10_META)
    return _summary("cifar10", seed, test_fraction, train, test)


def write_digits_cifar10(
    root: Path, *, seed: int = 0, test_fraction: float = TEST_FRACTION
) -> dict[str, Any]:
    """Write ``root/cifar-10-batches-py`` (5 train batches, test batch, meta); 32x32 RGB.

    Python 3 pickles with str keys (``data``, ``labels``, ``batch_label``, ``filenames``),
    which torchvision's reader parses; torchvision.datasets.CIFAR10 itself refuses them
    for their md5, so ``pcdarts.data.cifar.load_cifar10`` reads them.
    """
    with atomic_path(Path(root), directory=True) as tmp:
        summary = _write_cifar10(tmp, seed, test_fraction)
    return {"path": str(root), **summary}


# --------------------------------------------------------------------------- ImageNet


def _write_imagenet(
    root: Path,
    image_size: int,
    seed: int,
    test_fraction: float,
    classes: int = len(CLASS_NAMES),
    per_class: tuple[int, int] = (ALL_DIGITS, ALL_DIGITS),
) -> dict[str, Any]:
    """The digits' tree (``per_class`` = ALL_DIGITS), or ``classes`` folders of ``per_class``
    (train, val) images each (class c: digits of label c mod 10, seeded draws)."""
    if per_class != (ALL_DIGITS, ALL_DIGITS):
        return _write_imagenet_classes(root, image_size, seed, test_fraction, classes, per_class)
    if classes != len(CLASS_NAMES):
        raise ValueError(f"{classes} classes need images per class (every digit fills 10)")
    images, labels, train, test = _split(seed, test_fraction)
    for split, idx in (("train", train), ("val", test)):
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True)
        for i in idx:
            wnid = WNIDS[labels[i]]
            # Named after the digit index, so a file traces back to its digit.
            name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{i:08d}.JPEG"
            _save_jpeg(_grey_to_rgb(upsample(images[i], image_size)), root / split / wnid / name)
    return {**_summary("imagenet", seed, test_fraction, train, test), "image_size": image_size}


def _write_imagenet_classes(
    root: Path,
    image_size: int,
    seed: int,
    test_fraction: float,
    classes: int,
    per_class: tuple[int, int],
) -> dict[str, Any]:
    """ILSVRC2012's shape: ``classes`` wnid folders (n00000000, ...) of ``per_class`` (train,
    val) JPEGs, numbered as ILSVRC2012's files; train folders draw train digits only."""
    if min(per_class) < 1:
        raise ValueError(f"images per class must both be >= 1, got {per_class}")
    images, labels, train, test = _split(seed, test_fraction)
    rng = np.random.default_rng([seed, 2])  # own stream: the split used default_rng(seed)
    wnids = [f"n{c:08d}" for c in range(classes)]
    drawn: dict[str, list[int]] = {}
    for split, pool, count in (("train", train, per_class[0]), ("val", test, per_class[1])):
        drawn[split] = []
        for c, wnid in enumerate(wnids):
            (root / split / wnid).mkdir(parents=True)
            members = pool[labels[pool] == c % len(CLASS_NAMES)]
            for i in rng.choice(members, count, replace=count > len(members)):
                n = len(drawn[split]) + 1
                name = f"{wnid}_{n}.JPEG" if split == "train" else f"ILSVRC2012_val_{n:08d}.JPEG"
                image = _grey_to_rgb(upsample(images[i], image_size))
                _save_jpeg(image, root / split / wnid / name)
                drawn[split].append(int(i))
    summary = _summary("imagenet", seed, test_fraction, train, test)
    summary.update({"classes": wnids, "image_size": image_size, "images_per_class": per_class})
    return {**summary, "train_images": len(drawn["train"]), "val_images": len(drawn["val"])}


def write_digits_imagenet(
    root: Path,
    *,
    image_size: int = IMAGENET_SIZE,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    classes: int = len(CLASS_NAMES),
    per_class: tuple[int, int] = (ALL_DIGITS, ALL_DIGITS),
) -> dict[str, Any]:
    """Write the ILSVRC2012 layout: ``root/{train,val}/<wnid>/*.JPEG``, RGB, image_size px:
    every digit once in 10 classes, or ``classes`` folders of ``per_class`` (train, val)."""
    with atomic_path(Path(root), directory=True) as tmp:
        summary = _write_imagenet(tmp, image_size, seed, test_fraction, classes, per_class)
    return {"path": str(root), **summary}


# --------------------------------------------------------------------------- COCO


def _overlaps(box: tuple[int, int, int], placed: list[tuple[int, int, int]]) -> bool:
    """Whether square (x, y, side) intersects any placed square."""
    x, y, s = box
    return any(x < px + ps and px < x + s and y < py + ps and py < y + s for px, py, ps in placed)


def _canvas(
    rng: np.random.Generator,
    images: np.ndarray,
    pool: np.ndarray,
    canvas_size: int,
    digits_per_image: tuple[int, int],
    scale_range: tuple[int, int],
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One canvas (H, W, 3) uint8 and its (digit index, [x, y, w, h]) instances."""
    base = rng.integers(0, BACKGROUND_MAX_LEVEL)
    noise = rng.normal(0.0, BACKGROUND_NOISE_STD, (canvas_size, canvas_size, 3))
    canvas = np.clip(base + noise, 0, PIXEL_MAX).astype(np.uint8)
    placed: list[tuple[int, int, int]] = []
    instances: list[tuple[int, list[float]]] = []
    for _ in range(rng.integers(digits_per_image[0], digits_per_image[1] + 1)):
        digit = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(scale_range[0], scale_range[1] + 1))
        tint = rng.uniform(*DIGIT_TINT_RANGE, size=3)
        for _ in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, canvas_size - side + 1, size=2))
            if not _overlaps((x, y, side), placed):
                break
        else:
            continue  # crowded: leave this digit out rather than overlap
        patch = upsample(images[digit], side)
        ys, xs = np.nonzero(patch)
        region = canvas[y : y + side, x : x + side]
        np.maximum(region, (_grey_to_rgb(patch) * tint).astype(np.uint8), out=region)
        placed.append((x, y, side))
        # Tight box of the digit's non-zero pixels, COCO [x, y, w, h] in pixel edges.
        box = [x + xs.min(), y + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        instances.append((digit, [float(v) for v in box]))
    return canvas, instances


def _write_coco(
    root: Path,
    *,
    canvas_size: int,
    counts: dict[str, int],
    digits_per_image: tuple[int, int],
    scale_range: tuple[int, int],
    seed: int,
    test_fraction: float,
    categories: int = len(CLASS_NAMES),
) -> dict[str, Any]:
    lo, hi = scale_range
    if not 0 < lo <= hi <= canvas_size or not 1 <= digits_per_image[0] <= digits_per_image[1]:
        raise ValueError(f"bad scale_range {scale_range} or digits_per_image {digits_per_image}")
    images, labels, train, test = _split(seed, test_fraction)
    rng = np.random.default_rng([seed, 1])  # own stream: the split used default_rng(seed)
    category_of = _coco_categories(categories, np.random.default_rng([seed, 3]))
    listed = [
        {"id": c + 1, "name": name, "supercategory": "digit"} for c, name in enumerate(CLASS_NAMES)
    ]
    if categories != len(CLASS_NAMES):
        listed = [{"id": i, "name": name, "supercategory": "coco"} for i, name in COCO_CATEGORIES]
    (root / "annotations").mkdir(parents=True)
    used: dict[str, set[int]] = {}
    ann_id = 1
    for split, pool, first_id in (
        ("train2017", train, 1),
        ("val2017", test, COCO_FIRST_VAL_IMAGE_ID),
    ):
        (root / split).mkdir()
        coco_images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        used[split] = set()
        for image_id in range(first_id, first_id + counts[split]):
            canvas, instances = _canvas(
                rng, images, pool, canvas_size, digits_per_image, scale_range
            )
            file_name = f"{image_id:0{COCO_FILE_DIGITS}d}.jpg"
            _save_jpeg(canvas, root / split / file_name)
            coco_images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": canvas_size,
                    "height": canvas_size,
                }
            )
            for digit, (x, y, w, h) in instances:
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": category_of(int(labels[digit])),
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],  # the box
                        "digit_index": digit,  # provenance; COCO readers ignore extra keys
                    }
                )
                used[split].add(digit)
                ann_id += 1
        doc = {
            "info": {"description": COCO_DESCRIPTION, "version": "1.0"},
            "licenses": [],
            "images": coco_images,
            "annotations": annotations,
            "categories": listed,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    summary = _summary("coco", seed, test_fraction, train, test)
    summary.update(
        {
            "canvas_size": canvas_size,
            "images": dict(counts),
            "train_digits_used": sorted(used["train2017"]),
            "test_digits_used": sorted(used["val2017"]),
            "annotations": ann_id - 1,
            "categories": [c["name"] for c in listed],
        }
    )
    return summary


def _coco_categories(count: int, rng: np.random.Generator) -> Callable[[int], int]:
    """Digit label -> category id: the digits' 1..10, or (COCO 2017's 80) one of the eight
    COCO ids whose index is the label mod 10, drawn from ``rng``."""
    if count not in COCO_CATEGORY_COUNTS:
        raise ValueError(f"categories must be one of {COCO_CATEGORY_COUNTS}, got {count}")
    if count == len(CLASS_NAMES):
        return lambda label: label + 1
    ids = [i for i, _ in COCO_CATEGORIES]
    per_label = len(ids) // len(CLASS_NAMES)
    return lambda label: ids[label + len(CLASS_NAMES) * int(rng.integers(per_label))]


def write_digits_coco(
    root: Path,
    *,
    canvas_size: int = COCO_CANVAS_SIZE,
    images_train: int = COCO_IMAGES_TRAIN,
    images_val: int = COCO_IMAGES_VAL,
    digits_per_image: tuple[int, int] = COCO_DIGITS_PER_IMAGE,
    scale_range: tuple[int, int] = COCO_SCALE_RANGE,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    categories: int = len(CLASS_NAMES),
) -> dict[str, Any]:
    """Write the COCO 2017 layout: ``root/{train2017,val2017}/*.jpg`` and ``root/annotations``.

    Each canvas holds ``digits_per_image`` (inclusive range) non-overlapping digits, each a
    square of side in ``scale_range`` (inclusive); boxes are the tight boxes of the pasted
    digits' non-zero pixels. Categories 1..10 are "zero".."nine" (``categories`` = 10), or
    COCO 2017's 80 (``categories`` = 80). Train canvases draw only train digits, val canvases
    only test digits.
    """
    with atomic_path(Path(root), directory=True) as tmp:
        summary = _write_coco(
            tmp,
            canvas_size=canvas_size,
            counts={"train2017": images_train, "val2017": images_val},
            digits_per_image=digits_per_image,
            scale_range=scale_range,
            seed=seed,
            test_fraction=test_fraction,
            categories=categories,
        )
    return {"path": str(root), **summary}


# --------------------------------------------------------------------------- all


def _summary(
    fmt: str, seed: int, test_fraction: float, train: np.ndarray, test: np.ndarray
) -> dict[str, Any]:
    return {
        "format": fmt,
        "seed": seed,
        "test_fraction": test_fraction,
        "num_train": len(train),
        "num_test": len(test),
        "classes": list(CLASS_NAMES),
        "train_digits": [int(i) for i in train],
        "test_digits": [int(i) for i in test],
    }


def write_all(
    root: Path,
    *,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    imagenet_size: int = IMAGENET_SIZE,
    coco_canvas_size: int = COCO_CANVAS_SIZE,
    coco_images_train: int = COCO_IMAGES_TRAIN,
    coco_images_val: int = COCO_IMAGES_VAL,
    imagenet_classes: int = len(CLASS_NAMES),
    imagenet_per_class: tuple[int, int] = (ALL_DIGITS, ALL_DIGITS),
    coco_categories: int = len(CLASS_NAMES),
) -> dict[str, Any]:
    """Write ``root/cifar10``, ``root/imagenet`` and ``root/coco`` from one split, atomically.

    The defaults are the digits' own layout; ``imagenet_classes`` / ``imagenet_per_class``
    and ``coco_categories`` give ILSVRC2012's and COCO 2017's class counts (module doc)."""
    root = Path(root)
    with atomic_path(root, directory=True) as tmp:
        imagenet = (imagenet_size, seed, test_fraction, imagenet_classes, imagenet_per_class)
        summaries = {
            "cifar10": _write_cifar10(tmp / "cifar10", seed, test_fraction),
            "imagenet": _write_imagenet(tmp / "imagenet", *imagenet),
            "coco": _write_coco(
                tmp / "coco",
                canvas_size=coco_canvas_size,
                counts={"train2017": coco_images_train, "val2017": coco_images_val},
                digits_per_image=COCO_DIGITS_PER_IMAGE,
                scale_range=COCO_SCALE_RANGE,
                seed=seed,
                test_fraction=test_fraction,
                categories=coco_categories,
            ),
        }
    return {name: {"path": str(root / name), **s} for name, s in summaries.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION)
    args = parser.parse_args(argv)
    summaries = write_all(args.root, seed=args.seed, test_fraction=args.test_fraction)
    for name, s in summaries.items():
        print(f"{name}: {s['num_train']} train / {s['num_test']} test digits -> {s['path']}")


if __name__ == "__main__":
    main()
