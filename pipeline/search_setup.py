"""What a search needs before its first step: the prepared data, the two loaders, the supernet.

Shared by the ``search`` stage and ``benchmarks/decisiveness.py``, so that the benchmark
runs exactly the search the pipeline runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from pcdarts import create_model
from pcdarts.data.datasets import image_dataset
from pcdarts.data.loaders import make_loader
from pcdarts.data.splits import indices_from_json
from pcdarts.runtime import seed_everything
from pcdarts.supernet import Supernet
from pipeline.config import REPO_ROOT, Params, SearchParams, section
from pipeline.io import read_json
from pipeline.launch import per_process_batch
from pipeline.paths import MANIFEST, splits
from pipeline.stage import augment_kwargs


@dataclass
class SearchInputs:
    params: SearchParams  # the dataset's search section (with the K of the ablation, if any)
    model: Supernet
    weight_loader: DataLoader[Any]
    arch_loader: DataLoader[Any]
    manifest: dict[str, Any]  # data/prepared/manifest.json
    dataset_size: int  # images in the weight and arch splits together


def search_inputs(
    p: Params,
    dataset: str,
    seed: int,
    k: int | None = None,
    root: Path = REPO_ROOT,
    fused: bool = True,
) -> SearchInputs:
    """Seed, then build the search of ``dataset`` from the prepared data under ``root``.

    ``k`` replaces the supernet's partial-channel K (the K ablation); ``fused=False`` builds
    the edge-by-edge cells (the same parameters, the oracle forward). The weight loader
    shuffles with ``seed`` and the arch loader with ``seed + 1``; the batch is this process's
    share of ``search.<dataset>.batch_size``.
    """
    sp: SearchParams = section(p, f"search.{dataset}")
    if k is not None:
        sp = replace(sp, network=replace(sp.network, k=k))
    seed_everything(seed)
    manifest: dict[str, Any] = read_json(root / MANIFEST, "prepare")
    data_root = root / manifest["datasets"][dataset]["root"]
    train_set = image_dataset(
        dataset, data_root, train=True, augment=True, image_size=sp.image_size, **augment_kwargs(p)
    )
    weight_idx, arch_idx, _ = read_json(root / splits(dataset), "prepare", indices_from_json)
    batch = per_process_batch(sp.batch_size, f"search.{dataset}.batch_size")
    loader_args: dict[str, Any] = {
        "batch_size": batch,
        "shuffle": True,
        "num_workers": p.data.num_workers,
    }
    weight_loader = make_loader(train_set, weight_idx, seed=seed, **loader_args)
    arch_loader = make_loader(train_set, arch_idx, seed=seed + 1, **loader_args)
    # The study's options (C, layers, K, EN) over the dataset's variant; classes from the data
    classes = len(manifest["datasets"][dataset]["classes"])
    name = f"pcdarts_supernet_{dataset}"
    model = create_model(name, num_classes=classes, fused=fused, **asdict(sp.network))
    assert isinstance(model, Supernet)  # the registry's name says so; mypy cannot
    return SearchInputs(
        sp, model, weight_loader, arch_loader, manifest, len(weight_idx) + len(arch_idx)
    )
