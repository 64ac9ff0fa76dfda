"""The embedded digits dataset (pipeline/embedded_data.py): formats, splits, determinism."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcdarts.data.checks import DatasetError
from pcdarts.data.cifar import CIFAR10_FOLDER, check_cifar10, load_cifar10
from pcdarts.data.coco import check_coco
from pcdarts.data.imagenet import check_imagenet, load_imagenet
from pcdarts.data.splits import split_per_class
from pipeline.embedded_data import (
    CLASS_NAMES,
    COCO_CATEGORIES,
    WNIDS,
    load_digits_uint8,
    write_all,
    write_digits_cifar10,
    write_digits_coco,
    write_digits_imagenet,
)
from pipeline.io import atomic_path

NUM_DIGITS = 1797  # sklearn load_digits
SMALL_COCO: dict[str, Any] = {
    "images_train": 12,
    "images_val": 6,
    "canvas_size": 64,
    "scale_range": (12, 24),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("embedded") / "data"
    summary = write_all(
        root,
        seed=0,
        imagenet_size=16,
        coco_canvas_size=64,
        coco_images_train=12,
        coco_images_val=6,
    )
    return root, summary


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_one_split_shared_by_all_formats(written: tuple[Path, dict[str, Any]]) -> None:
    _, summary = written
    train, test = set(summary["cifar10"]["train_digits"]), set(summary["cifar10"]["test_digits"])
    assert not train & test and len(train | test) == NUM_DIGITS
    assert 280 <= len(test) <= 320  # about 1/6, rounded per class
    for fmt in ("imagenet", "coco"):
        assert set(summary[fmt]["train_digits"]) == train
        assert set(summary[fmt]["test_digits"]) == test
    assert set(summary["coco"]["train_digits_used"]) <= train
    assert set(summary["coco"]["test_digits_used"]) <= test


def test_cifar10_format(written: tuple[Path, dict[str, Any]]) -> None:
    root, summary = written
    _, labels = load_digits_uint8()
    train = load_cifar10(root / "cifar10", train=True)
    test = load_cifar10(root / "cifar10", train=False)
    assert len(train) == summary["cifar10"]["num_train"]
    assert len(test) == summary["cifar10"]["num_test"]
    assert train.data.shape == (len(train), 32, 32, 3) and train.classes == list(CLASS_NAMES)
    assert np.array_equal(train.data[..., 0], train.data[..., 2])  # grey in all three channels
    assert train.data.max() > 200 and train.data.min() == 0
    # File names carry the digit index: labels and split membership must match sklearn's.
    batch = pickle.loads((root / "cifar10" / CIFAR10_FOLDER / "test_batch").read_bytes())
    digits = [int(name.split("_s_")[1][:6]) for name in batch["filenames"]]
    assert set(digits) == set(summary["cifar10"]["test_digits"])
    assert batch["labels"] == [int(labels[d]) for d in digits] == test.targets
    assert check_cifar10(root / "cifar10")["train_images"] == len(train)


def test_imagenet_format(written: tuple[Path, dict[str, Any]]) -> None:
    root, summary = written
    train = load_imagenet(root / "imagenet", "train")
    val = load_imagenet(root / "imagenet", "val")
    assert train.classes == list(WNIDS) == val.classes
    assert len(train) == summary["imagenet"]["num_train"]
    assert len(val) == summary["imagenet"]["num_test"]
    img, label = val[0]
    assert img.size == (16, 16) and img.mode == "RGB" and label == 0
    val_digits = {int(Path(p).stem.split("_")[-1]) for p, _ in val.samples}
    assert val_digits == set(summary["imagenet"]["test_digits"])
    assert check_imagenet(root / "imagenet")["val_images"] == len(val)


def test_coco_format(written: tuple[Path, dict[str, Any]]) -> None:
    root, summary = written
    coco_root = root / "coco"
    image_ids: set[int] = set()
    for split, pool in (("train2017", "train_digits"), ("val2017", "test_digits")):
        doc = json.loads((coco_root / "annotations" / f"instances_{split}.json").read_text())
        assert [c["name"] for c in doc["categories"]] == list(CLASS_NAMES)
        assert [c["id"] for c in doc["categories"]] == list(range(1, 11))
        images = {im["id"]: im for im in doc["images"]}
        assert not image_ids & images.keys()
        image_ids |= images.keys()
        assert all((coco_root / split / im["file_name"]).is_file() for im in images.values())
        assert doc["annotations"]
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            im = images[ann["image_id"]]
            assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
            assert w > 0 and h > 0 and ann["area"] == w * h and ann["iscrowd"] == 0
            assert ann["digit_index"] in summary["coco"][pool]
        per_image = [sum(a["image_id"] == i for a in doc["annotations"]) for i in images]
        assert min(per_image) >= 1 and max(per_image) <= 4
    assert check_coco(coco_root)["train2017"]["images"] == 12


def test_imagenet_at_ilsvrc2012_shapes(tmp_path: Path) -> None:
    """1,000 wnid folders of N images each, drawn from the digits of label class mod 10 (train
    digits in train/, test digits in val/), at the asked size; the per-class subsets of the
    search (method §5) find one weight and one arch image in every class."""
    summary = write_digits_imagenet(
        tmp_path / "imagenet", image_size=24, classes=1000, per_class=(2, 1)
    )
    train = load_imagenet(tmp_path / "imagenet", "train")
    val = load_imagenet(tmp_path / "imagenet", "val")
    assert len(train.classes) == 1000 == len(set(train.classes)) and train.classes == val.classes
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in train.classes)
    assert (
        (len(train), len(val)) == (2000, 1000) == (summary["train_images"], summary["val_images"])
    )
    assert np.bincount(train.targets).tolist() == [2] * 1000
    names = [Path(p).name for p, _ in val.samples]
    assert len(set(names)) == 1000 and all(n.startswith("ILSVRC2012_val_") for n in names)
    assert {train[i][0].size for i in (0, 1999)} == {(24, 24)}
    weight, arch = split_per_class(train.targets, 0.1, 0.025)
    assert len(weight) == len(arch) == 1000
    checked = check_imagenet(tmp_path / "imagenet")
    assert (checked["min_side"], len(checked["classes"])) == (24, 1000)


def test_coco_with_coco_2017_categories(tmp_path: Path) -> None:
    """COCO 2017's 80 ids (1..90 with ten unused) and names; an instance of digit d takes a
    category whose index is d mod 10, and every annotation refers to one of them."""
    _, labels = load_digits_uint8()
    summary = write_digits_coco(tmp_path / "coco", seed=1, categories=80, **SMALL_COCO)
    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_train2017.json").read_text())
    ids = [c["id"] for c in doc["categories"]]
    assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90 and 12 not in ids
    assert [c["name"] for c in doc["categories"]][:2] == ["person", "bicycle"]
    assert summary["categories"] == [name for _, name in COCO_CATEGORIES]
    for ann in doc["annotations"]:
        assert ids.index(ann["category_id"]) % 10 == labels[ann["digit_index"]]
    assert len({a["category_id"] for a in doc["annotations"]}) > 10  # more than one per digit
    assert check_coco(tmp_path / "coco")["categories"] == summary["categories"]
    with pytest.raises(ValueError, match="categories must be one of"):
        write_digits_coco(tmp_path / "bad", categories=20, **SMALL_COCO)


def test_coco_boxes_are_tight_and_do_not_overlap(tmp_path: Path) -> None:
    from PIL import Image

    write_digits_coco(tmp_path / "c", seed=3, **SMALL_COCO)
    doc = json.loads((tmp_path / "c" / "annotations" / "instances_train2017.json").read_text())
    for im in doc["images"][:4]:
        pixels = np.asarray(Image.open(tmp_path / "c" / "train2017" / im["file_name"]).convert("L"))
        boxes = [a["bbox"] for a in doc["annotations"] if a["image_id"] == im["id"]]
        for i, (x, y, w, h) in enumerate(boxes):
            x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
            # Inside the box there is ink; the digit is brighter than the dark background.
            assert pixels[y0:y1, x0:x1].max() > 100
            for xb, yb, wb, hb in boxes[i + 1 :]:
                assert x1 <= xb or xb + wb <= x0 or y1 <= yb or yb + hb <= y0


def test_pycocotools_reads_it(written: tuple[Path, dict[str, Any]]) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    root, _ = written
    coco = coco_module.COCO(str(root / "coco" / "annotations" / "instances_val2017.json"))
    assert len(coco.getCatIds()) == 10 and coco.getImgIds()


@pytest.mark.parametrize(
    "write",
    [
        lambda root, seed: write_digits_cifar10(root, seed=seed),
        lambda root, seed: write_digits_imagenet(root, image_size=8, seed=seed),
        lambda root, seed: write_digits_coco(root, seed=seed, **SMALL_COCO),
    ],
    ids=["cifar10", "imagenet", "coco"],
)
def test_same_seed_same_bytes(tmp_path: Path, write: Any) -> None:
    write(tmp_path / "a", 0)
    write(tmp_path / "b", 0)
    write(tmp_path / "c", 1)
    a, b, c = (_tree_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert a != c


def test_checks_reject_damaged_copies(written: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = written
    cifar = shutil.copytree(root / "cifar10", tmp_path / "cifar10")
    (cifar / CIFAR10_FOLDER / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match=str(cifar / CIFAR10_FOLDER / "data_batch_4")):
        check_cifar10(cifar)

    imagenet = shutil.copytree(root / "imagenet", tmp_path / "imagenet")
    shutil.rmtree(imagenet / "val" / WNIDS[3])
    with pytest.raises(DatasetError, match=str(imagenet)):
        check_imagenet(imagenet)

    coco = shutil.copytree(root / "coco", tmp_path / "coco")
    ann = coco / "annotations" / "instances_val2017.json"
    ann.write_text(ann.read_text()[:-10])
    with pytest.raises(DatasetError, match=str(ann)):
        check_coco(coco)

    coco2 = shutil.copytree(root / "coco", tmp_path / "coco2")
    victim = sorted((coco2 / "train2017").iterdir())[3]
    victim.unlink()
    with pytest.raises(DatasetError, match=str(victim)):
        check_coco(coco2)


def test_atomic_dir_keeps_old_data_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_path(target, directory=True) as tmp:
        (tmp / "v").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "v").read_text() == "1"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "w").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["w"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary siblings left
