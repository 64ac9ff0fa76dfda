"""What a training needs before its first step: the cell, the prepared data, the loaders and
the network. The ``train`` stage's counterpart of :mod:`pipeline.search_setup`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from pcdarts import count_macs, count_params, create_model
from pcdarts.data.datasets import image_dataset
from pcdarts.data.loaders import make_loader
from pcdarts.genotypes import Genotype, load_genotype
from pcdarts.network import Network
from pcdarts.runtime import seed_everything
from pipeline.config import REPO_ROOT, SEARCHED, Params, TrainParams, section
from pipeline.io import read_json, upstream
from pipeline.launch import per_process_batch
from pipeline.paths import MANIFEST, prepare_outs, search_outs
from pipeline.stage import augment_kwargs


def genotype_for(
    dataset: str, cell: str, seed: int, root: Path = REPO_ROOT
) -> tuple[Genotype, Path]:
    """The cell and the run file of what it came from: ``searched`` (``search@<dataset>-
    <seed>``'s genotype, under ``root``), ``searched:<other dataset>``, or through the one
    loader ``random:<seed>``, a registry name or a JSON file (relative to the repository)."""
    name, _, searched_on = cell.partition(":")
    if name == SEARCHED:
        found = search_outs(searched_on or dataset, seed)
        stage = f"search@{searched_on or dataset}-{seed}"
        return load_genotype(upstream(root / found["genotype"], stage)), found["run"]
    return load_genotype(cell, root=REPO_ROOT), prepare_outs()["run"]


@dataclass
class TrainInputs:
    params: TrainParams  # the dataset's train section
    model: Network
    network: dict[str, Any]  # what the network was built from, saved beside its weights
    train_loader: DataLoader[Any]
    test_loader: DataLoader[Any]
    manifest: dict[str, Any]  # data/prepared/manifest.json
    train_size: int  # images in the training set
    size: dict[str, float]  # the network's parameters and mult-adds, as logged


def train_inputs(
    p: Params, dataset: str, genotype: Genotype, root: Path = REPO_ROOT
) -> TrainInputs:
    """Seed, then build the training of ``genotype`` on ``dataset`` from the prepared data
    under ``root``: the train loader shuffles with ``p.seed``, the batch is this process's
    share of ``train_<dataset>.batch_size``."""
    train_params: TrainParams = section(p, f"train_{dataset}")
    seed_everything(p.seed)
    manifest: dict[str, Any] = read_json(root / MANIFEST, "prepare")
    data_root = root / manifest["datasets"][dataset]["root"]
    kw = {
        "image_size": train_params.image_size,
        "cutout_length": train_params.cutout_length,
        "color_jitter": train_params.color_jitter,
        **augment_kwargs(p),
    }
    train_set = image_dataset(dataset, data_root, train=True, augment=True, **kw)
    test_set = image_dataset(dataset, data_root, train=False, augment=False, **kw)
    batch = per_process_batch(train_params.batch_size, f"train_{dataset}.batch_size")
    loaders: dict[str, Any] = {"seed": p.seed, "num_workers": p.data.num_workers}
    train_loader = make_loader(train_set, None, batch, shuffle=True, **loaders)
    test_loader = make_loader(test_set, None, batch, shuffle=False, **loaders)
    # The study's options (C, layers, auxiliary head) over the dataset's variant; classes
    # from the data
    classes = len(manifest["datasets"][dataset]["classes"])
    options = asdict(train_params.network)
    auxiliary = options.pop("auxiliary")  # recorded last, as checkpoints always have it
    shape = {**options, "num_classes": classes, "auxiliary": auxiliary}
    model = create_model(f"pcdarts_{dataset}", genotype=genotype, **shape)
    assert isinstance(model, Network)  # the registry's name says so; mypy cannot
    size = {
        "model/params_m": count_params(model),
        "model/macs_m": count_macs(model, train_params.image_size),
        "model/macs_conv_linear_m": count_macs(model, train_params.image_size, "conv_linear"),
    }
    return TrainInputs(
        train_params,
        model,
        {"dataset": dataset, **shape},
        train_loader,
        test_loader,
        manifest,
        len(train_set),  # type: ignore[arg-type]
        size,
    )
