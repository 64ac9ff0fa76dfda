"""Ranges and consistency of ``params.yaml``: one table, checked when a stage loads its params.

The schema (pipeline/config.py) checks keys and types; this checks values. ``RANGES`` maps
key patterns (``fnmatch`` over the dotted key, ``*`` spans dots) to the range every
matching value must lie in; ``CONSISTENCY`` holds the few rules that relate two keys.
:func:`first_violation` returns the first value outside its rule, so a stage refuses a bad
config before it reads any data or builds any model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from fnmatch import fnmatchcase
from typing import Any

from pcdarts.config import SCHEDULES
from pcdarts.space import MIN_LAYERS, reduction_cells
from pipeline.kernels import CPU_KERNELS

SEED_LIMIT = 2**32  # np.random.seed accepts seeds in [0, 2**32)
MAX_HUE = 0.5  # ColorJitter's hue lies in [0, 0.5]
COLOR_JITTER_VALUES = 4  # brightness, contrast, saturation, hue (method §6)
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")  # pcdarts.runtime.resolve_device's names
DIGIT_CLASSES = 10  # the embedded digits' classes (pipeline/embedded_data.py)
EMBEDDED_COCO_CATEGORIES = (DIGIT_CLASSES, 80)  # the digits' own, or COCO 2017's 80
CELL_PAIRS = 8  # (op, input) pairs of a derived cell: 4 nodes x 2 (method §4)


@dataclass(frozen=True)
class Rule:
    """A test on one value and what it says when the value fails it."""

    ok: Callable[[Any], bool]
    says: str  # completes "<key> = <value>: ..."


@dataclass(frozen=True)
class Violation:
    key: str  # full dotted key, e.g. search.cifar10.loop.lr
    value: Any
    says: str


def _number(v: Any) -> bool:
    """A finite int or float (YAML's .nan and .inf pass the schema's type check)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def greater(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v > low, f"must be > {low}")


def at_least(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= low, f"must be >= {low}")


def within(low: float, high: float, *, low_open: bool, high_open: bool) -> Rule:
    def ok(v: Any) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return _number(v) and above and below

    return Rule(
        ok, f"must lie in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    )


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"must be one of {', '.join(map(repr, choices))}")


def each(rule: Rule) -> Rule:
    return Rule(lambda v: all(rule.ok(x) for x in v), f"every value {rule.says}")


def optional(rule: Rule) -> Rule:
    return Rule(
        lambda v: v is None or rule.ok(v), f"must be null or {rule.says.removeprefix('must be ')}"
    )


FRACTION = within(0, 1, low_open=True, high_open=False)  # (0, 1]
PROBABILITY = within(0, 1, low_open=False, high_open=True)  # [0, 1)
SEED = within(0, SEED_LIMIT, low_open=False, high_open=True)
COLOR_JITTER = Rule(
    lambda v: (
        len(v) in (0, COLOR_JITTER_VALUES)
        and all(_number(x) and x >= 0 for x in v)
        and (not v or v[-1] <= MAX_HUE)
    ),
    f"must be [] or {COLOR_JITTER_VALUES} values >= 0 (brightness, contrast, saturation,"
    f" hue <= {MAX_HUE})",
)

# Every int or float in params.yaml matches at least one pattern (tests/test_params.py).
RANGES: tuple[tuple[str, Rule], ...] = (
    ("seed", SEED),
    ("seeds", each(SEED)),
    ("k_values", each(at_least(1))),
    (
        "device",
        Rule(lambda v: DEVICE.fullmatch(v) is not None, "must be auto, cpu, cuda or cuda:N"),
    ),
    ("runtime.cpu_kernels", one_of(*CPU_KERNELS)),
    ("data.source", one_of("embedded", "real")),
    ("data.num_workers", at_least(0)),
    ("data.decode_images", at_least(0)),
    ("data.embedded.test_fraction", within(0, 1, low_open=True, high_open=True)),
    ("data.embedded.*_size", at_least(1)),
    ("data.embedded.coco_images_*", at_least(1)),
    ("data.embedded.imagenet_classes", at_least(2)),
    ("data.embedded.imagenet_*_per_class", at_least(0)),
    (
        "data.embedded.coco_categories",
        Rule(lambda v: v in EMBEDDED_COCO_CATEGORIES, "must be 10 (the digits) or 80 (COCO 2017)"),
    ),
    ("data.augment.cifar_crop_padding", at_least(0)),
    ("data.augment.imagenet_crop_scale_min", FRACTION),
    ("*.C", at_least(1)),
    ("*.layers", at_least(MIN_LAYERS)),
    ("*.k", at_least(1)),
    ("*batch_size", at_least(1)),
    ("*image_size", at_least(1)),
    ("prepare.*.arch_fraction", within(0, 1, low_open=True, high_open=True)),  # both halves used
    ("prepare.*.weight_fraction", FRACTION),
    ("prepare.*.arch_fraction_per_class", FRACTION),
    ("*.epochs", at_least(1)),
    ("*.warmup_epochs", at_least(0)),
    ("*.lr_warmup_epochs", at_least(0)),
    ("*.lr", greater(0)),
    ("*.lr_min", at_least(0)),
    ("*.lr_schedule", one_of(*SCHEDULES)),
    ("*.momentum", PROBABILITY),
    ("*.weight_decay", at_least(0)),
    ("*.loop.grad_clip", greater(0)),
    ("*.architect.grad_clip", optional(greater(0))),
    ("*.betas", each(PROBABILITY)),
    ("*.hvp_eps", greater(0)),
    ("*.eval_every", at_least(1)),
    ("*.diagnostics.hessian_every", at_least(1)),
    ("*.diagnostics.hessian_iterations", at_least(1)),
    ("*.diagnostics.hessian_tolerance", greater(0)),
    ("*.stopping.*.start_epoch", at_least(0)),
    ("*.stopping.robust_darts.window", at_least(1)),
    ("*.stopping.robust_darts.delta", at_least(1)),
    ("*.stopping.robust_darts.factor", at_least(1)),  # < 1 would stop a flat eigenvalue
    (
        "*.stopping.darts_plus.skip_connections",
        within(1, CELL_PAIRS, low_open=False, high_open=False),
    ),
    ("train_*.cutout_length", at_least(0)),
    ("train_*.color_jitter", COLOR_JITTER),
    ("*.aux_weight", at_least(0)),
    ("*.drop_path_prob", PROBABILITY),
    ("*.label_smoothing", PROBABILITY),
    ("derive.mobile_budget_macs_m", greater(0)),
    ("derive.*_classes", at_least(2)),
    ("transfer_ssd.val_interval", at_least(1)),
    ("transfer_ssd.log_interval", at_least(1)),
    ("report.paper.*", at_least(0)),
    ("dist.nproc_per_node", at_least(1)),
    ("dist.nnodes", at_least(1)),
    ("dist.rdzv_timeout_s", at_least(1)),
    ("dist.rdzv_connect_timeout_s", at_least(1)),
    ("dist.max_restarts", at_least(0)),
)


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-dataclass value of a dataclass tree."""
    for f in fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            yield from leaves(value, f"{key}.")
        else:
            yield key, value


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = getattr(tree, part)
    return tree


def cell_channels(C: int, layers: int) -> list[int]:  # noqa: N803 - the paper's name
    """Channels of every supernet cell: C, doubled at each reduction (1/3, 2/3 depth)."""
    reductions = reduction_cells(layers)
    return [C * 2 ** sum(i >= r for r in reductions) for i in range(layers)]


def _search_rules(p: Any) -> Iterator[Violation]:
    world = p.dist.nproc_per_node * p.dist.nnodes
    for name in ("cifar10", "imagenet"):
        s, key = getattr(p.search, name), f"search.{name}"
        if s.loop.warmup_epochs >= s.loop.epochs:
            says = f"must be < {key}.loop.epochs = {s.loop.epochs} (else no architecture step)"
            yield Violation(f"{key}.loop.warmup_epochs", s.loop.warmup_epochs, says)
        channels = sorted(set(cell_channels(s.network.C, s.network.layers)))
        if any(c % s.network.k for c in channels):
            says = f"must divide the channels of every cell, {channels} (from {key}.network.C)"
            yield Violation(f"{key}.network.k", s.network.k, says)
        yield from _divides(f"{key}.batch_size", s.batch_size, world)
    split = p.prepare.imagenet
    if split.weight_fraction + split.arch_fraction_per_class > 1:
        says = f"plus prepare.imagenet.weight_fraction = {split.weight_fraction} must be <= 1"
        yield Violation(
            "prepare.imagenet.arch_fraction_per_class",
            split.arch_fraction_per_class,
            f"{says} (per class)",
        )
    if p.seed not in p.seeds:
        says = f"must hold seed = {p.seed}: the main search, whose cells are trained"
        yield Violation("seeds", p.seeds, says)
    c = p.search.cifar10
    channels = sorted(set(cell_channels(c.network.C, c.network.layers)))
    if c.network.k in p.k_values:
        says = f"must not hold search.cifar10.network.k = {c.network.k}: the main search is its row"
        yield Violation("k_values", p.k_values, says)
    for k in p.k_values:
        if any(ch % k for ch in channels):
            says = f"every K must divide the channels of every cell, {channels} (search.cifar10)"
            yield Violation("k_values", p.k_values, says)


def _loop_rules(p: Any) -> Iterator[Violation]:
    for key in ("search.cifar10", "search.imagenet", "train_cifar10", "train_imagenet"):
        loop = _get(p, key).loop
        if loop.lr_warmup_epochs >= loop.epochs:
            says = f"must be < {key}.loop.epochs = {loop.epochs}"
            yield Violation(f"{key}.loop.lr_warmup_epochs", loop.lr_warmup_epochs, says)
        if getattr(loop, "lr_min", 0.0) > loop.lr:
            says = f"must be <= {key}.loop.lr = {loop.lr}"
            yield Violation(f"{key}.loop.lr_min", loop.lr_min, says)


def _stopping_rules(p: Any) -> Iterator[Violation]:
    """A stopping rule must be able to fire: RobustDARTS reads the eigenvalue, and neither
    rule may start after the last epoch."""
    for name in ("cifar10", "imagenet"):
        loop, key = getattr(p.search, name).loop, f"search.{name}.loop"
        robust = loop.stopping.robust_darts
        if robust.enabled and not loop.diagnostics.hessian:
            says = f"needs {key}.diagnostics.hessian = true (the rule reads the eigenvalue)"
            yield Violation(f"{key}.stopping.robust_darts.enabled", True, says)
        for rule in ("robust_darts", "darts_plus"):
            settings = getattr(loop.stopping, rule)
            if settings.enabled and settings.start_epoch >= loop.epochs:
                says = f"must be < {key}.epochs = {loop.epochs} (else the rule never fires)"
                yield Violation(f"{key}.stopping.{rule}.start_epoch", settings.start_epoch, says)


def _data_rules(p: Any) -> Iterator[Violation]:
    e, key = p.data.embedded, "data.embedded"
    per_class = (e.imagenet_train_per_class, e.imagenet_val_per_class)
    if 0 in per_class and per_class != (0, 0):
        says = f"and {key}.imagenet_val_per_class = {per_class[1]} must be both 0 or both >= 1"
        yield Violation(f"{key}.imagenet_train_per_class", per_class[0], says)
    if per_class == (0, 0) and e.imagenet_classes != DIGIT_CLASSES:
        says = (
            f"must be {DIGIT_CLASSES} when every digit is written once "
            f"({key}.imagenet_*_per_class = 0); set images per class for more class folders"
        )
        yield Violation(f"{key}.imagenet_classes", e.imagenet_classes, says)


def _divides(key: str, batch: int, world: int) -> Iterator[Violation]:
    if batch % world:
        says = f"must be divisible by the {world} processes (dist.nproc_per_node x dist.nnodes)"
        yield Violation(key, batch, says)


def _launch_rules(p: Any) -> Iterator[Violation]:
    world = p.dist.nproc_per_node * p.dist.nnodes
    for key in ("train_cifar10.batch_size", "train_imagenet.batch_size", "transfer_ssd.batch_size"):
        yield from _divides(key, _get(p, key), world)
    host, _, port = p.dist.rdzv_endpoint.rpartition(":")
    if p.dist.nnodes > 1 and not (host and port.isdigit()):
        says = f"must be host:port when dist.nnodes = {p.dist.nnodes} > 1"
        yield Violation("dist.rdzv_endpoint", p.dist.rdzv_endpoint, says)


CONSISTENCY: tuple[Callable[[Any], Iterator[Violation]], ...] = (
    _data_rules,
    _search_rules,
    _loop_rules,
    _launch_rules,
    _stopping_rules,
)


def first_violation(params: Any) -> Violation | None:
    """The first value of ``params`` (a ``Params``) outside its range, then the first
    inconsistency between two values; None when all hold."""
    for key, value in leaves(params):
        for pattern, rule in RANGES:
            if fnmatchcase(key, pattern) and not rule.ok(value):
                return Violation(key, value, rule.says)
    for rules in CONSISTENCY:
        for violation in rules(params):
            return violation
    return None
