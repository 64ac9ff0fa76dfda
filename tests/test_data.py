"""Unit tests of the data layer (pcdarts/data/) on tiny hand-made datasets."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from pcdarts.data.checks import DatasetError
from pcdarts.data.cifar import (
    CIFAR10_FOLDER,
    CIFAR10_META,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    check_cifar10,
    load_cifar10,
)
from pcdarts.data.coco import check_coco
from pcdarts.data.imagenet import check_imagenet, load_imagenet
from pcdarts.data.loaders import EpochSampler, make_loader
from pcdarts.data.splits import (
    class_counts,
    indices_from_json,
    indices_to_json,
    split_per_class,
    split_weight_arch,
)
from pcdarts.data.transforms import CIFAR_MEAN, Cutout, cifar_transforms, imagenet_transforms

# --------------------------------------------------------------------------- fixtures


def _write_cifar(root: Path, per_batch: int = 4, bytes_keys: bool = False) -> Path:
    """A tiny CIFAR-10 python folder; labels cycle 0..9; pixel (0, 0, 0) holds the index."""
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    start = 0
    for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH):
        data = np.zeros((per_batch, 3072), np.uint8)
        data[:, 0] = np.arange(start, start + per_batch)
        labels = [i % 10 for i in range(start, start + per_batch)]
        batch = {key("data"): data, key("labels"): labels, key("batch_label"): name}
        (folder / name).write_bytes(pickle.dumps(batch))
        start += per_batch
    meta = {key("label_names"): [f"c{i}" for i in range(10)]}
    (folder / CIFAR10_META).write_bytes(pickle.dumps(meta))
    return folder


def _write_image_folder(root: Path, classes: tuple[str, ...], per_class: int = 2) -> None:
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for k in range(per_class):
                Image.new("RGB", (12, 10), (k * 40, 0, 0)).save(root / split / c / f"{k}.png")


def _write_coco(root: Path, bbox: list[float] | None = None) -> Path:
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        Image.new("RGB", (20, 10)).save(root / split / "1.jpg")
    (root / "annotations").mkdir()
    doc = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 20, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": bbox or [2.0, 1.0, 18.0, 9.0]}
        ],
        "categories": [{"id": 3, "name": "three"}],
    }
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


# --------------------------------------------------------------------------- transforms


def test_cutout_zeroes_one_clipped_square_and_is_seeded() -> None:
    img = torch.ones(3, 10, 10)
    torch.manual_seed(3)
    out = Cutout(4)(img)
    zero = out[0] == 0
    assert torch.equal(img, torch.ones(3, 10, 10)), "input must not be modified"
    assert all(torch.equal(out[c] == 0, zero) for c in range(3)), "same square in every channel"
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    # A full rectangle: the zeros are exactly the product of their row and column ranges.
    assert 0 < len(rows) <= 4 and 0 < len(cols) <= 4
    assert zero.sum() == len(rows) * len(cols)
    assert rows.diff().eq(1).all() and cols.diff().eq(1).all()
    torch.manual_seed(3)
    assert torch.equal(Cutout(4)(img), out)


def test_cifar_transforms_shapes_normalisation_and_cutout() -> None:
    mean_colour = tuple(round(m * 255) for m in CIFAR_MEAN)
    img = Image.new("RGB", (32, 32), mean_colour)
    x = cifar_transforms(False)(img)
    assert x.shape == (3, 32, 32) and x.abs().max() < 0.02  # the mean colour normalises to ~0
    assert cifar_transforms(True, image_size=16)(img).shape == (3, 16, 16)
    assert cifar_transforms(False, image_size=16)(img).shape == (3, 16, 16)
    train = cifar_transforms(True, cutout_length=16)
    assert isinstance(train.transforms[-1], Cutout)
    assert not any(isinstance(t, Cutout) for t in cifar_transforms(True).transforms)


def test_imagenet_transforms_shapes_and_jitter() -> None:
    img = Image.new("RGB", (300, 200), (10, 200, 30))
    assert imagenet_transforms(False, image_size=56, resize_size=64)(img).shape == (3, 56, 56)
    train = imagenet_transforms(True, image_size=48, color_jitter=(0.4, 0.4, 0.4, 0.2))
    assert train(img).shape == (3, 48, 48)
    names = [type(t).__name__ for t in train.transforms]
    assert "ColorJitter" in names
    assert "ColorJitter" not in [type(t).__name__ for t in imagenet_transforms(True).transforms]


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_load_cifar10_reads_pickles(tmp_path: Path, bytes_keys: bool) -> None:
    _write_cifar(tmp_path, bytes_keys=bytes_keys)
    train = load_cifar10(tmp_path, train=True, transform=None)
    test = load_cifar10(tmp_path, train=False)
    assert len(train) == 20 and len(test) == 4
    assert train.data.shape == (20, 32, 32, 3) and train.data.dtype == np.uint8
    assert train.data[7, 0, 0, 0] == 7  # first byte is the R plane's top-left pixel
    assert train.targets[:3] == [0, 1, 2] and test.targets == [0, 1, 2, 3]
    assert train.classes[2] == "c2"
    img, y = test[1]
    assert img.size == (32, 32) and y == 1
    summary = check_cifar10(tmp_path)
    assert summary["train_images"] == 20 and summary["test_images"] == 4
    assert summary["train_class_counts"][0] == 2


def test_load_cifar10_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=CIFAR10_FOLDER):
        load_cifar10(tmp_path, train=True)
    folder = _write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(tmp_path, train=False)


def test_check_cifar10_rejects_bad_labels_and_garbage(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    batch["labels"][0] = 10
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(DatasetError, match="labels outside"):
        check_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_1"):
        check_cifar10(tmp_path)


# --------------------------------------------------------------------------- ImageNet


def test_load_and_check_imagenet(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, ("n01", "n02"))
    eval_tf = imagenet_transforms(False, image_size=8, resize_size=8)
    ds = load_imagenet(tmp_path, "val", transform=eval_tf)
    assert ds.classes == ["n01", "n02"] and len(ds) == 4
    assert ds[3][0].shape == (3, 8, 8) and ds[3][1] == 1
    summary = check_imagenet(tmp_path)
    assert summary["train_images"] == 4 and summary["classes"] == ["n01", "n02"]
    assert (summary["min_side"], summary["max_side"]) == (10, 12)


def test_imagenet_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train"):
        load_imagenet(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_imagenet(tmp_path, "train")
    _write_image_folder(tmp_path / "x", ("n01", "n02"))
    (tmp_path / "x" / "train" / "n03").mkdir()
    with pytest.raises(DatasetError, match="n03"):
        load_imagenet(tmp_path / "x", "train")
    (tmp_path / "x" / "train" / "n03").rmdir()
    (tmp_path / "x" / "val" / "n02" / "1.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="1.png"):
        check_imagenet(tmp_path / "x")


def _truncate(path: Path) -> None:
    """Cut an image file short, as an interrupted copy or download does."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("workers", [1, 3])
def test_check_imagenet_decodes_every_image_and_names_a_corrupt_one(
    tmp_path: Path, workers: int
) -> None:
    _write_image_folder(tmp_path, ("n01", "n02", "n03"), per_class=12)
    summary = check_imagenet(tmp_path, workers=workers)
    assert (summary["train_decoded"], summary["val_decoded"]) == (36, 36)
    victim = tmp_path / "train" / "n02" / "7.png"  # neither first, last nor evenly spread
    _truncate(victim)
    with pytest.raises(DatasetError, match=f"^{victim}: cannot be decoded .*Replace or remove"):
        check_imagenet(tmp_path, workers=workers)


def test_check_imagenet_decodes_a_seeded_sample_when_asked(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, ("n01", "n02"), per_class=20)
    summary = check_imagenet(tmp_path, decode_images=5, seed=1)
    assert (summary["train_images"], summary["train_decoded"], summary["val_decoded"]) == (40, 5, 5)
    for k in range(20):  # corrupt the whole val split: any sample of it finds one
        _truncate(tmp_path / "val" / "n01" / f"{k}.png")
    with pytest.raises(DatasetError, match="cannot be decoded"):
        check_imagenet(tmp_path, decode_images=5, seed=1)


# --------------------------------------------------------------------------- COCO


def test_check_coco_refuses_a_corrupt_image_by_name(tmp_path: Path) -> None:
    root = _write_coco(tmp_path / "coco")
    assert check_coco(root)["train2017"]["decoded"] == 1
    victim = root / "train2017" / "1.jpg"
    _truncate(victim)
    with pytest.raises(DatasetError, match=f"^{victim}: cannot be decoded"):
        check_coco(root)
    victim.write_bytes(b"")  # an empty file
    with pytest.raises(DatasetError, match=f"^{victim}: cannot be decoded"):
        check_coco(root, workers=2)


def test_check_coco_accepts_and_rejects(tmp_path: Path) -> None:
    good = _write_coco(tmp_path / "good")
    summary = check_coco(good)
    assert summary["categories"] == ["three"] and summary["val2017"]["annotations"] == 1
    outside = _write_coco(tmp_path / "outside", bbox=[5.0, 1.0, 16.0, 9.0])  # 5 + 16 > 20
    with pytest.raises(DatasetError, match="outside"):
        check_coco(outside)
    (good / "val2017" / "1.jpg").unlink()
    with pytest.raises(DatasetError, match="val2017"):
        check_coco(good)
    nameless = _write_coco(tmp_path / "nameless")
    ann = nameless / "annotations" / "instances_val2017.json"
    ann.write_text(ann.read_text().replace('"name": "three"', '"nom": "three"'))
    with pytest.raises(DatasetError, match="malformed record"):
        check_coco(nameless)
    broken = _write_coco(tmp_path / "broken")
    (broken / "annotations" / "instances_train2017.json").write_text("{")
    with pytest.raises(DatasetError, match="instances_train2017.json"):
        check_coco(broken)


# --------------------------------------------------------------------------- splits


def test_split_weight_arch() -> None:
    w, a = split_weight_arch(101, seed=1)
    assert len(w) == 50 and len(a) == 51  # floor(0.5 * n) for weights, as the reference
    assert not np.intersect1d(w, a).size and np.union1d(w, a).tolist() == list(range(101))
    w2, a2 = split_weight_arch(101, seed=1)
    assert np.array_equal(w, w2) and np.array_equal(a, a2)
    assert not np.array_equal(w, split_weight_arch(101, seed=2)[0])
    w3, a3 = split_weight_arch(10, arch_fraction=0.3, shuffle=False)
    assert w3.tolist() == list(range(7)) and a3.tolist() == [7, 8, 9]
    with pytest.raises(ValueError):
        split_weight_arch(10, arch_fraction=1.0)


def test_split_per_class_fractions_and_minimums() -> None:
    targets = np.repeat(np.arange(4), [200, 40, 3, 1])
    w, a = split_per_class(targets, weight_fraction=0.1, arch_fraction=0.025, seed=0)
    assert not np.intersect1d(w, a).size
    assert class_counts(targets[w]) == {0: 20, 1: 4, 2: 1, 3: 1}
    assert class_counts(targets[a]) == {0: 5, 1: 1, 2: 1}  # floor(2.5*...) and the minimum 1
    w2, a2 = split_per_class(targets, seed=0)
    assert np.array_equal(w, w2) and np.array_equal(a, a2)
    assert not np.array_equal(w, split_per_class(targets, seed=1)[0])
    with pytest.raises(ValueError):
        split_per_class(targets, weight_fraction=0.9, arch_fraction=0.2)


def test_indices_json_round_trip() -> None:
    w, a = split_weight_arch(12, seed=0)
    text = indices_to_json(w, a, {"seed": 0, "dataset": "cifar10"})
    assert text == indices_to_json(w, a, {"dataset": "cifar10", "seed": 0})  # key order free
    w2, a2, meta = indices_from_json(text)
    assert np.array_equal(w, w2) and np.array_equal(a, a2) and meta["seed"] == 0
    with pytest.raises(ValueError):
        indices_to_json(np.array([1, 2]), np.array([2, 3]), {})


# --------------------------------------------------------------------------- loaders


def test_epoch_sampler_orders_are_seeded_per_epoch() -> None:
    idx = np.arange(10, 30)
    s = EpochSampler(idx, seed=5)
    first = list(s)
    assert sorted(first) == idx.tolist()
    assert list(EpochSampler(idx, seed=5)) == first
    s.set_epoch(1)
    second = list(s)
    assert second != first and sorted(second) == idx.tolist()
    resumed = EpochSampler(idx, seed=5)
    resumed.set_epoch(1)
    assert list(resumed) == second
    assert list(EpochSampler(idx, shuffle=False)) == idx.tolist()


def test_epoch_sampler_shards_and_pads() -> None:
    idx = np.arange(10)
    shards = [list(EpochSampler(idx, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(10)) and len(flat) == 12  # two padded repeats


def test_make_loader_reproducible_order_and_worker_seed() -> None:
    data = TensorDataset(torch.arange(20))
    sub = np.arange(0, 20, 2)

    def epoch_order(epoch: int) -> tuple[list[int], int]:
        loader = make_loader(data, sub, batch_size=4, shuffle=True, seed=7)
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        order = [int(v) for (batch,) in loader for v in batch]
        assert loader.generator is not None
        return order, loader.generator.initial_seed()

    (o0, g0), (o0b, g0b), (o1, g1) = epoch_order(0), epoch_order(0), epoch_order(1)
    assert o0 == o0b and g0 == g0b
    assert o0 != o1 and g0 != g1
    assert sorted(o0) == sub.tolist()
    plain = make_loader(data, None, batch_size=8, shuffle=False, seed=0, drop_last=True)
    assert [b[0].tolist() for b in plain] == [list(range(8)), list(range(8, 16))]
