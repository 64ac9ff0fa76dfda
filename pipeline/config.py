"""Typed schemas of ``params.yaml``: a typo or a wrong type fails at load, naming the key.

``params.yaml`` is composed by Hydra from ``conf/`` (``make params``) on top of these
dataclasses, registered in Hydra's ConfigStore as the first entry of conf/config.yaml's
defaults: every default lives here once (the paper's value, "method §n"), conf/ holds only
what differs, and the composed tree is checked against the same schema. The loop settings
and the networks' options (C, layers, K, ...) are the library's own frozen config
dataclasses (pcdarts.config), and every paper value the rest defaults to is a constant of
pcdarts.config, so a field or a value exists once only; the setups (pipeline/search_setup.py,
pipeline/train_setup.py) add what follows from the dataset (stem, classes).
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Union, cast, get_args, get_origin, get_type_hints

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from pcdarts.config import (
    CIFAR10_CLASSES,
    CIFAR_ARCH_FRACTION,
    CIFAR_CROP_PADDING,
    CIFAR_IMAGE_SIZE,
    CUTOUT_LENGTH,
    IMAGENET_ARCH_FRACTION,
    IMAGENET_CLASSES,
    IMAGENET_COLOR_JITTER,
    IMAGENET_CROP_SCALE_MIN,
    IMAGENET_IMAGE_SIZE,
    IMAGENET_NETWORK,
    IMAGENET_SEARCH_LOOP,
    IMAGENET_SEARCH_NETWORK,
    IMAGENET_TRAIN_LOOP,
    IMAGENET_WEIGHT_FRACTION,
    SEARCH_BATCH_CIFAR10,
    SEARCH_BATCH_IMAGENET,
    TRAIN_BATCH_CIFAR10,
    TRAIN_BATCH_IMAGENET,
    NetworkOptions,
    SearchConfig,
    SupernetOptions,
    TrainConfig,
)
from pcdarts.errors import UserError
from pipeline.param_rules import Violation, first_violation, leaves

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "params.yaml"
CONF_DIR = REPO_ROOT / "conf"


@dataclass
class EmbeddedDataParams:
    """The default data: scikit-learn's 1,797 handwritten digits in the real formats.

    The defaults are the digits' own layout (10 classes, every digit once); the paper
    profile writes them at ILSVRC2012's and COCO 2017's shapes (pipeline/embedded_data.py).
    """

    test_fraction: float = 1 / 6  # held-out digits, shared by all three formats
    imagenet_size: int = 64  # side of the ImageNet-style JPEGs
    coco_canvas_size: int = 128  # side of the COCO-style detection canvases
    coco_images_train: int = 400
    coco_images_val: int = 100
    imagenet_classes: int = 10  # class folders (wnid-style); ILSVRC2012 has 1,000
    # Images per class folder, drawn from the digits of label class mod 10: 0 = every digit of
    # the class once (10 classes only); N = N each, as ILSVRC2012's per-class folders
    imagenet_train_per_class: int = 0
    imagenet_val_per_class: int = 0
    coco_categories: int = 10  # 10: the digits "zero".."nine"; 80: COCO 2017's ids and names


@dataclass
class AugmentParams:
    """Training-time augmentation of the search and the final training (method §5-6)."""

    hflip: bool = True  # random horizontal flip (method §5-6); off for digits, which it mirrors
    cifar_crop_padding: int = CIFAR_CROP_PADDING  # CIFAR random crop 32, padding 4 (method §5-6)
    imagenet_crop_scale_min: float = IMAGENET_CROP_SCALE_MIN  # RandomResizedCrop's (reference)


@dataclass
class DataParams:
    source: str = "real"  # "real" (the datasets below) or "embedded" (digits, written by `prepare`)
    cifar10_root: str = "data/real/cifar10"  # holds cifar-10-batches-py/
    imagenet_root: str = "data/real/imagenet"  # ILSVRC2012: train/<wnid>/*.JPEG, val/<wnid>/*.JPEG
    coco_root: str = "data/real/coco"  # COCO 2017: train2017/, val2017/, annotations/
    download_cifar10: bool = False  # real: let torchvision download CIFAR-10 into cifar10_root
    num_workers: int = 8  # DataLoader workers per process (and `prepare`'s decoding threads)
    # Images per split `prepare` decodes to refuse corrupt files: 0 = every one (ImageNet:
    # ~1.3 M JPEGs at 1/8 scale, minutes per core), N = a seeded sample of N (in the manifest)
    decode_images: int = 0
    embedded: EmbeddedDataParams = field(default_factory=EmbeddedDataParams)
    augment: AugmentParams = field(default_factory=AugmentParams)


@dataclass
class CifarSplit:
    """The CIFAR-10 search's split of the training set (method §5)."""

    arch_fraction: float = CIFAR_ARCH_FRACTION  # half of train for the arch step, half for weights


@dataclass
class ImagenetSplit:
    """The ImageNet search's per-class subsets of the training set (method §5)."""

    weight_fraction: float = IMAGENET_WEIGHT_FRACTION  # 10% per class for the weights
    arch_fraction_per_class: float = IMAGENET_ARCH_FRACTION  # another 2.5% per class: arch step


@dataclass
class PrepareParams:
    """What `prepare` writes besides the data: the searches' seeded index splits."""

    cifar10: CifarSplit = field(default_factory=CifarSplit)
    imagenet: ImagenetSplit = field(default_factory=ImagenetSplit)


@dataclass
class SearchParams:
    """One dataset's search; the defaults are the CIFAR-10 column of method §5."""

    # C, layers, K, EN: pcdarts.config's (CIFAR-10's); the stem and classes follow the dataset
    network: SupernetOptions = field(default_factory=SupernetOptions)
    batch_size: int = SEARCH_BATCH_CIFAR10  # method §5 (global, over all processes)
    image_size: int = CIFAR_IMAGE_SIZE  # method §5
    loop: SearchConfig = field(default_factory=SearchConfig)  # pcdarts.config: CIFAR-10's


def imagenet_search() -> SearchParams:
    """The ImageNet column of method §5, assembled from pcdarts.config's ImageNet values: K=2,
    batch 1024 on 8 GPUs, 224x224 crops, 35 warm-up epochs, lr 0.5 with 5 epochs of linear
    warm-up, arch lr 6e-3 clipped at 5."""
    return SearchParams(
        IMAGENET_SEARCH_NETWORK,
        batch_size=SEARCH_BATCH_IMAGENET,
        image_size=IMAGENET_IMAGE_SIZE,
        loop=IMAGENET_SEARCH_LOOP,
    )


@dataclass
class SearchStages:
    cifar10: SearchParams = field(default_factory=SearchParams)
    imagenet: SearchParams = field(default_factory=imagenet_search)


SEARCHED = "searched"  # a cell spec: the genotype this pipeline's search found


@dataclass
class TrainParams:
    """One dataset's final training; the defaults are the CIFAR-10 column of method §6."""

    # The cells trained (the stage family train_<dataset>@<cell>): "searched" (the search
    # of this dataset), "searched:<dataset>" (another dataset's), "random:<seed>" (a cell
    # drawn uniformly from the DARTS space), a registry name (pc_darts_cifar) or a JSON file
    cells: list[str] = field(default_factory=lambda: [SEARCHED])
    # C, layers, auxiliary head: pcdarts.config's (CIFAR-10's); the stem and classes follow
    network: NetworkOptions = field(default_factory=NetworkOptions)
    batch_size: int = TRAIN_BATCH_CIFAR10  # method §6: the code's 96 (the paper says 128)
    image_size: int = CIFAR_IMAGE_SIZE  # method §6
    cutout_length: int = CUTOUT_LENGTH  # method §6, CIFAR-10 only (0 = off)
    color_jitter: list[float] = field(default_factory=list)  # [] = off
    loop: TrainConfig = field(default_factory=TrainConfig)  # pcdarts.config: CIFAR-10's


def imagenet_training() -> TrainParams:
    """The ImageNet column of method §6 (mobile setting), assembled from pcdarts.config's
    ImageNet values: both searched cells, C=48, 14 cells, 250 epochs, batch 1024, lr 0.5
    decayed linearly after 5 warm-up epochs, weight decay 3e-5, label smoothing 0.1, colour
    jitter, no cutout and no drop path."""
    return TrainParams(
        cells=[SEARCHED, f"{SEARCHED}:cifar10"],
        network=IMAGENET_NETWORK,
        batch_size=TRAIN_BATCH_IMAGENET,
        image_size=IMAGENET_IMAGE_SIZE,
        cutout_length=0,
        color_jitter=list(IMAGENET_COLOR_JITTER),
        loop=IMAGENET_TRAIN_LOOP,
    )


@dataclass
class TransferParams:
    """SSD on COCO through MMDetection with the ImageNet-retrained backbone (method §7).

    The model, anchors and augmentation are the MMDetection config ``config`` names;
    these are the knobs that change between runs. method §7 gives only the input size
    (320x320, in the config); the schedule is MMDetection's SSDLite 320 recipe.
    """

    config: str = "ssdlite_pcdarts_320_coco"  # detection/configs/<config>.py
    pretrained: bool = True  # backbone from train_imagenet@searched; False: random init
    epochs: int = 120  # MMDetection SSDLite 320: 120 epochs over 5x repeated train2017
    batch_size: int = 192  # global: 8 GPUs x 24 (MMDetection SSDLite 320)
    lr: float = 0.015  # SGD, cosine decay, for batch 192 (MMDetection SSDLite 320)
    val_interval: int = 5  # epochs between COCO evaluations (the last is always evaluated)
    log_interval: int = 50  # iterations between logged losses


@dataclass
class DeriveParams:
    """A searched cell counted at the paper's sizes (method §7)."""

    cifar_network: NetworkOptions = field(default_factory=NetworkOptions)  # counted at 32x32
    imagenet_network: NetworkOptions = field(default_factory=lambda: IMAGENET_NETWORK)
    mobile_budget_macs_m: float = 600.0  # ImageNet mobile setting: < 600 M mult-adds (method §6)
    cifar_image_size: int = CIFAR_IMAGE_SIZE  # CIFAR-10 images (method §7 counts at 32x32)
    imagenet_image_size: int = IMAGENET_IMAGE_SIZE  # ImageNet crops (method §7: 224x224)
    cifar_classes: int = CIFAR10_CLASSES
    imagenet_classes: int = IMAGENET_CLASSES  # ILSVRC2012


@dataclass
class PaperCifar:
    test_top1_err: float = 2.57  # CIFAR-10 test error, % (method §7; +- 0.07 over 4 retrainings)
    params_m: float = 3.6  # C=36, 20 cells (method §7)
    search_gpu_days: float = 0.1  # one GTX 1080Ti (method §7)


@dataclass
class PaperImagenet:
    top1_err: float = 24.2  # ImageNet-searched cell (method §7); CIFAR-searched 25.1
    top5_err: float = 7.3  # ImageNet-searched cell; CIFAR-searched 7.8
    params_m: float = 5.3  # method §7, both cells
    macs_m: float = 597.0  # paper convention (with BN and ReLU); CIFAR-searched 586
    search_gpu_days: float = 3.8  # 8 V100, 11.5 h (method §7); the CIFAR cell's search: 0.1


@dataclass
class PaperNumbers:
    """What the paper reports (method §7), printed beside ours."""

    cifar10: PaperCifar = field(default_factory=PaperCifar)
    imagenet_cifar_cell: PaperImagenet = field(
        default_factory=lambda: PaperImagenet(25.1, 7.8, 5.3, 586.0, 0.1)
    )
    imagenet_imagenet_cell: PaperImagenet = field(default_factory=PaperImagenet)
    ssd_coco_ap: float = 28.9  # SSD 320x320, ImageNet-searched backbone; unconfirmed (method §7)


@dataclass
class ReportParams:
    paper: PaperNumbers = field(default_factory=PaperNumbers)


@dataclass
class DistParams:
    """torchrun launch of the search and training stages (`dvc repro` starts it)."""

    nproc_per_node: int = 1  # processes (GPUs) per machine; the paper: 8 for the ImageNet search
    nnodes: int = 1  # machines; > 1 needs rdzv_endpoint, and the same command on each
    rdzv_endpoint: str = ""  # host:port of the rendezvous (c10d) for multi-node runs
    rdzv_id: str = "pcdarts"  # job id shared by the nodes of one run
    # Seconds a node waits at the rendezvous for all nnodes nodes to join (torchrun's
    # join_timeout default); past it every waiting node stops, naming rdzv_endpoint
    rdzv_timeout_s: int = 600
    # Seconds a node keeps trying to reach the rendezvous store at rdzv_endpoint (a wrong
    # address or port fails after this; torchrun's read_timeout default)
    rdzv_connect_timeout_s: int = 60
    # torchrun restarts of every node's processes after one of them fails or a node is lost;
    # each restart resumes from the last checkpointed epoch (torchrun's default: none)
    max_restarts: int = 0


@dataclass
class RuntimeParams:
    """How the stages' processes compute, beside the device (pipeline/kernels.py)."""

    # "avx2": PyTorch's CPU kernels pinned to their AVX2 code, so every x86-64 machine with
    # AVX2 computes the same bits (one golden run); "native": the CPU's fastest kernels
    cpu_kernels: str = "avx2"


@dataclass
class TrackingParams:
    tracking_uri: str = ""  # "" = sqlite store mlflow.db in the repo; MLFLOW_TRACKING_URI wins
    experiment: str = "pcdarts"  # one experiment per study


@dataclass
class Params:
    profile: str = "paper"  # recorded with every output, so a tiny run never looks like a paper one
    seed: int = 0  # the main seed: the searched cells downstream come from search@<dataset>-<seed>
    # Every search runs once per seed (the stage family search@<dataset>-<seed>); must hold
    # `seed`. The others are the stability study: does the genotype survive the seed?
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    # The K ablation (method §2): the CIFAR-10 search at `seed` once per K (search_k@<K>),
    # beside the main search's K (search.cifar10.network.k, 4), which is not run twice
    k_values: list[int] = field(default_factory=lambda: [1, 2, 8])
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    search: SearchStages = field(default_factory=SearchStages)
    derive: DeriveParams = field(default_factory=DeriveParams)
    train_cifar10: TrainParams = field(default_factory=TrainParams)
    train_imagenet: TrainParams = field(default_factory=imagenet_training)
    transfer_ssd: TransferParams = field(default_factory=TransferParams)
    report: ReportParams = field(default_factory=ReportParams)
    dist: DistParams = field(default_factory=DistParams)
    runtime: RuntimeParams = field(default_factory=RuntimeParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)


SCHEMA_NAME = "params_schema"  # conf/config.yaml's first default


def schema() -> Any:
    """:class:`Params` as an OmegaConf node every field of which can be overridden (the
    library's frozen loop configs included)."""
    node = OmegaConf.structured(Params)
    _writable(node)
    return node


def register_schema() -> None:
    """Put the schema in Hydra's ConfigStore as ``params_schema``, the base conf/config.yaml
    composes onto: composition type-checks, and every field takes ``-S key=value``. DVC's
    composition finds it through hydra_plugins/ (its ``hydra.plugins_path``, the repo root)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema())


class ParamsError(UserError, ValueError):
    """params.yaml does not match the schema or a value is out of range; names the key."""


def validate(raw: dict[str, Any], source: str = "params") -> Params:
    """Check a plain dict against :class:`Params` (keys, types) and pipeline/param_rules.py
    (ranges, consistency); build the typed tree. ParamsError names the first bad key."""
    try:
        merged = OmegaConf.merge(schema(), raw)
        params = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        given = dict(_flat(raw))
        profile = str(raw.get("profile", Params.profile))
        raise ParamsError(f"{source}: {schema_mismatch(e, given, profile)}") from None
    assert isinstance(params, Params)
    if (bad := first_violation(params)) is not None:
        raise ParamsError(f"{source}: {_message(bad, params.profile)}")
    return params


def schema_mismatch(error: OmegaConfBaseException, given: Mapping[str, Any], profile: str) -> str:
    """One line for what the schema refused: a key it lacks (the nearest valid key, or the
    valid keys there) or a value of the wrong type (the type expected), and where to change
    it. ``given`` maps dotted keys to what was written (params.yaml's values, overrides)."""
    key = getattr(error, "full_key", None) or _value_for_section(given)
    if key and isinstance(error, ConfigKeyError | ConfigAttributeError):
        return _unknown_key(key, profile)
    field_key = key.partition("[")[0]  # seeds[1] -> seeds: the list is the field
    expected = _field_type(field_key) if key else None
    if isinstance(error, ValidationError) and expected is not None:
        says = f"expected {_describe(expected)}"
        return _message(Violation(field_key, given.get(field_key), says), profile)
    problem = str(error.msg if hasattr(error, "msg") else error).splitlines()[0]  # no dump
    return f"invalid key {key!r}: {problem}"


def _unknown_key(key: str, profile: str) -> str:
    """``key`` is not in the schema: the nearest key of its section ("did you mean"), else
    the section's keys; where to change it."""
    parent, _, name = key.rpartition(".")
    section_type = _field_type(parent) if parent else Params
    known = [f.name for f in fields(section_type)] if is_dataclass(section_type) else []
    holder = _conf_file_holding(key, profile)  # a typo in conf/ is fixed there
    if meant := _nearest_key(parent, name, known):
        where = holder or _conf_file(meant, profile)
        override = "" if _is_section(meant) else f" or with -S {meant}=..."
        return f"{key}: no such key (did you mean {meant}?); change it in {where}{override}"
    remove = f"; remove it from {holder}" if holder else ""
    return f"{key}: no such key; {parent or 'the top level'} has {', '.join(known)}{remove}"


def _nearest_key(parent: str, name: str, known: list[str]) -> str | None:
    """The key ``parent.name`` likely meant: a key of ``parent`` spelt alike, else the one
    setting of that name deeper in ``parent`` (``data.hflip`` -> ``data.augment.hflip``)."""
    prefix = f"{parent}." if parent else ""
    if close := get_close_matches(name, known, n=1):
        return prefix + close[0]
    deeper = [k for k, _ in leaves(Params()) if k.startswith(prefix) and k.endswith(f".{name}")]
    return deeper[0] if len(deeper) == 1 else None


def _field_type(key: str) -> Any:
    """The type :class:`Params` declares for the dotted ``key``; None outside the schema."""
    node: Any = Params
    for part in key.split("."):
        if not (is_dataclass(node) and part in (hints := get_type_hints(node))):
            return None
        node = hints[part]
    return node


def _is_section(key: str) -> bool:
    return is_dataclass(_field_type(key))


def _value_for_section(given: Mapping[str, Any]) -> str:
    """The key given a plain value where the schema has a section ("" if none): OmegaConf's
    merge error for it names no key."""
    return next((k for k, v in given.items() if _is_section(k) and not isinstance(v, dict)), "")


# How a message names the schema's scalar types: (one value, several)
_TYPE_WORDS = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
}


def _describe(type_: Any) -> str:
    """``int`` -> "an integer", ``list[float]`` -> "a list of numbers", ``float | None`` ->
    "a number or null", a section -> "a SearchConfig section"."""
    args = [a for a in get_args(type_) if a is not type(None) and a is not Ellipsis]
    if get_origin(type_) in (Union, types.UnionType):
        return " or ".join([*(_describe(a) for a in args), "null"])
    if get_origin(type_) in (list, tuple):  # the schema's lists hold one type
        return f"a list of {_TYPE_WORDS[args[0]][1]}"
    if type_ in _TYPE_WORDS:
        return _TYPE_WORDS[type_][0]
    if isinstance(type_, type) and is_dataclass(type_):
        return f"a {type_.__name__} section"
    return str(getattr(type_, "__name__", type_))


def _flat(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every node of a plain dict tree, the sections included."""
    for key, value in node.items() if isinstance(node, dict) else ():
        yield f"{prefix}{key}", value
        yield from _flat(value, f"{prefix}{key}.")


def _message(bad: Violation, profile: str) -> str:
    """``key = value: rule; change it in conf/<file> or with -S key=...``."""
    value = bad.value if isinstance(bad.value, int | float) else repr(bad.value)
    value = "null" if bad.value is None else value  # as YAML and overrides spell it
    return (
        f"{bad.key} = {value}: {bad.says}; change it in {_conf_file(bad.key, profile)}"
        f" or with -S {bad.key}=..."
    )


def _conf_file(key: str, profile: str) -> str:
    """The conf/ file that sets ``key`` for ``profile`` (the profile overlay wins), else the
    schema, which holds every default."""
    return _conf_file_holding(key, profile) or "pipeline/config.py"


def _conf_file_holding(key: str, profile: str) -> str | None:
    """The conf/ file that sets ``key`` for ``profile`` (the profile overlay wins), if any."""
    for path in (CONF_DIR / "profile" / f"{profile}.yaml", CONF_DIR / "config.yaml"):
        if path.is_file() and OmegaConf.select(OmegaConf.load(path), key) is not None:
            return str(path.relative_to(REPO_ROOT))
    return None


def _writable(node: Any) -> None:
    """The library's configs are frozen dataclasses: let the merge fill them in."""
    OmegaConf.set_readonly(node, False)
    if OmegaConf.is_dict(node):
        for key in node:
            child = node._get_node(key)
            if OmegaConf.is_config(child):
                _writable(child)


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; errors name the file and the key."""
    if not path.is_file():
        raise ParamsError(f"{path} not found: run `make params` to compose it from conf/")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or error
        raise ParamsError(
            f"{path} is not valid YAML{line}: {problem}; run `make params` to rewrite it"
        ) from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return validate(cast(dict[str, Any], raw), str(path))


def section(params: Params, dotted: str) -> Any:
    """``section(p, "search.cifar10")`` -> that sub-tree; ParamsError naming the choices
    when a part is not there (a mistyped stage argument: ``stages.search mnist``)."""
    node: Any = params
    for part in dotted.split("."):
        if not hasattr(node, "__dataclass_fields__") or part not in node.__dataclass_fields__:
            known = ", ".join(getattr(node, "__dataclass_fields__", {}))
            raise ParamsError(f"params.yaml has no section {dotted!r}; known here: {known}")
        node = getattr(node, part)
    return node


register_schema()  # importing the schema makes it composable (compose, tests, DVC's plugin)
