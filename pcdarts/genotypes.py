"""Genotypes: the frozen description of a cell pair, its validation, and the published ones.

A genotype lists, for each intermediate node of a cell, two ``(op, input)`` pairs
(strongest edge first); inputs 0 and 1 are the cell inputs, 2.. the earlier nodes. How a
genotype is derived from a supernet's architecture weights is :mod:`pcdarts.derivation`.

:func:`load_genotype` is the one way in from outside (a registry name, a JSON file, a
mapping): anything that is not a genotype of the DARTS space is refused with one
:class:`GenotypeError` naming the source, the first problem and the expected shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcdarts.errors import MissingInputError, UserError
from pcdarts.ops import PRIMITIVES
from pcdarts.space import INPUTS_PER_NODE, NODES

Gene = tuple[tuple[str, int], ...]

CELL_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")
GENOTYPE_SUFFIX = ".json"


class GenotypeError(UserError, ValueError):
    """Not a genotype of the DARTS space; the message names the source and the first problem."""


class UnknownGenotypeError(GenotypeError, KeyError):
    """A genotype name that is neither in the registry nor a file."""

    __str__ = Exception.__str__  # KeyError would quote the message


def expected_shape() -> str:
    """What a valid genotype looks like, for error messages."""
    ops = ", ".join(p for p in PRIMITIVES if p != "none")
    concat = list(range(INPUTS_PER_NODE, INPUTS_PER_NODE + NODES))
    return (
        f'Expected a JSON object {{"normal": [[op, input], ...], "normal_concat": {concat}, '
        f'"reduce": [[op, input], ...], "reduce_concat": {concat}}} with '
        f"{NODES * INPUTS_PER_NODE} [op, input] pairs per cell ({INPUTS_PER_NODE} per node, "
        f"{NODES} nodes), node j reading inputs 0..j+1 (0 and 1 are the cell inputs), op one "
        f"of {ops}; or a registered name: {', '.join(GENOTYPES)}"
    )


def _as_gene(pairs: Sequence[Sequence[Any]]) -> Gene:
    gene = tuple((str(op), int(idx)) for op, idx in pairs)
    for op, _ in gene:
        if op not in PRIMITIVES or op == "none":
            raise GenotypeError(f"genotype op {op!r} is not a DARTS primitive other than 'none'")
    return gene


def _pair_problem(cell: str, i: int, pair: Any) -> str | None:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return f"{cell}[{i}] = {pair!r} is not an [op, input] pair"
    op, idx = pair
    if not isinstance(op, str) or op not in PRIMITIVES or op == "none":
        return f"{cell}[{i}] op {op!r} is not a DARTS primitive other than 'none'"
    if not isinstance(idx, int) or isinstance(idx, bool):
        return f"{cell}[{i}] input {idx!r} is not an integer"
    node = i // INPUTS_PER_NODE
    if not 0 <= idx < INPUTS_PER_NODE + node:
        return (
            f"{cell}[{i}] (node {node}) reads state {idx}, not yet computed "
            f"(node {node} reads 0..{node + 1})"
        )
    return None


def genotype_problem(d: Any) -> str | None:
    """The first reason ``d`` is not a ``Genotype.to_dict()`` of the DARTS space, or None."""
    if not isinstance(d, Mapping):
        return f"holds a JSON {type(d).__name__}, not an object"
    missing = [k for k in CELL_KEYS if k not in d]
    if missing:
        return f"lacks {missing} (has {sorted(map(str, d))[:8]})"
    for cell in ("normal", "reduce"):
        gene = d[cell]
        pairs = NODES * INPUTS_PER_NODE
        if not isinstance(gene, list | tuple):
            return f"{cell} is a {type(gene).__name__}, not a list of [op, input] pairs"
        if len(gene) != pairs:
            return f"{cell} has {len(gene)} [op, input] pairs, not {pairs} ({NODES} nodes x 2)"
        for i, pair in enumerate(gene):
            if (problem := _pair_problem(cell, i, pair)) is not None:
                return problem
    concat = list(range(INPUTS_PER_NODE, INPUTS_PER_NODE + NODES))
    for key in ("normal_concat", "reduce_concat"):
        value = d[key]
        if not isinstance(value, list | tuple) or list(value) != concat:
            return f"{key} is {value!r}, not {concat} (every node is concatenated)"
    return None


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell; JSON round-trips through ``to_dict``/``from_dict``."""

    normal: Gene
    normal_concat: tuple[int, ...]
    reduce: Gene
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("normal", "reduce"):
            gene = getattr(self, field)
            object.__setattr__(self, field, _as_gene(gene))
            for node, (_, idx) in enumerate(getattr(self, field)):
                if not 0 <= idx < 2 + node // 2:
                    raise GenotypeError(f"{field}[{node}] reads state {idx}, not yet computed")
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))

    def to_dict(self) -> dict[str, list[Any]]:
        return {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "genotype") -> Genotype:
        """A genotype of the DARTS space from ``to_dict()``'s layout; GenotypeError otherwise."""
        if (problem := genotype_problem(d)) is not None:
            raise GenotypeError(f"{source}: {problem}. {expected_shape()}")
        return cls(d["normal"], d["normal_concat"], d["reduce"], d["reduce_concat"])


_CONCAT = (2, 3, 4, 5)

GENOTYPES: dict[str, Genotype] = {
    # DARTS (2nd order) CIFAR-10 cell, Liu et al. 2019; for comparison (method §4).
    "darts_v2": Genotype(
        normal=(
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ),
        normal_concat=_CONCAT,
        reduce=(
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ),
        reduce_concat=_CONCAT,
    ),
    # PC-DARTS, searched on CIFAR-10 (method §4, the cell retrained in the paper).
    "pc_darts_cifar": Genotype(
        normal=(
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 0),
            ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 1),
            ("avg_pool_3x3", 0),
            ("dil_conv_3x3", 1),
        ),
        normal_concat=_CONCAT,
        reduce=(
            ("sep_conv_5x5", 1),
            ("max_pool_3x3", 0),
            ("sep_conv_5x5", 1),
            ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 2),
        ),
        reduce_concat=_CONCAT,
    ),
    # PC-DARTS, searched on ImageNet (method §4).
    "pc_darts_imagenet": Genotype(
        normal=(
            ("skip_connect", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 3),
            ("sep_conv_3x3", 1),
            ("dil_conv_5x5", 4),
        ),
        normal_concat=_CONCAT,
        reduce=(
            ("sep_conv_3x3", 0),
            ("skip_connect", 1),
            ("dil_conv_5x5", 2),
            ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2),
            ("sep_conv_3x3", 1),
            ("sep_conv_5x5", 0),
            ("sep_conv_3x3", 3),
        ),
        reduce_concat=_CONCAT,
    ),
}


def get_genotype(name: str) -> Genotype:
    """Look up a published genotype by name."""
    try:
        return GENOTYPES[name]
    except KeyError:
        raise UnknownGenotypeError(
            f"unknown genotype {name!r}; known: {', '.join(GENOTYPES)}, or a path to a "
            f"{GENOTYPE_SUFFIX} file"
        ) from None


RANDOM_PREFIX = "random:"  # load_genotype("random:<seed>"): a cell drawn by random_genotype


def random_genotype(seed: int, nodes: int = NODES) -> Genotype:
    """A genotype drawn uniformly from the DARTS space, the same for the same ``seed``.

    For the normal and the reduction cell alike, each intermediate node picks
    ``INPUTS_PER_NODE`` distinct inputs among the states before it (the two cell inputs and
    the earlier nodes) and, for each, one op other than ``none``: the random-search
    baseline a searched cell must beat (method §4's space).
    """
    rng = np.random.default_rng(seed)
    ops = [op for op in PRIMITIVES if op != "none"]

    def cell() -> tuple[tuple[str, int], ...]:
        gene: list[tuple[str, int]] = []
        for node in range(nodes):
            inputs = rng.choice(node + 2, size=INPUTS_PER_NODE, replace=False)
            gene += [(ops[int(rng.integers(len(ops)))], int(i)) for i in inputs]
        return tuple(gene)

    concat = tuple(range(2, 2 + nodes))
    return Genotype(cell(), concat, cell(), concat)


def _random_seed(text: str) -> int:
    seed = text.removeprefix(RANDOM_PREFIX)
    if not seed.isdigit():
        raise GenotypeError(f"{text!r}: expected {RANDOM_PREFIX}<seed>, a seed >= 0 (random:3)")
    return int(seed)


GenotypeSource = Genotype | Mapping[str, Any] | str | os.PathLike[str]


def load_genotype(source: GenotypeSource, root: Path | None = None) -> Genotype:
    """The one genotype loader: a ``Genotype``, a ``to_dict()`` mapping, a registry name
    (``pc_darts_cifar``), ``random:<seed>`` (:func:`random_genotype`) or a JSON file
    (``outputs/search/cifar10/seed_0/genotype.json``; relative to ``root`` when given). A
    string is a file if it ends in ``.json``, holds a path separator or names an existing
    file; else a registry name.

    Raises GenotypeError (UnknownGenotypeError for a name) or MissingInputError, naming the
    source, the first problem and the expected shape.
    """
    if isinstance(source, Genotype):
        return source
    if isinstance(source, Mapping):
        return Genotype.from_dict(source, "genotype mapping")
    text = os.fspath(source)
    if isinstance(source, str) and text.startswith(RANDOM_PREFIX):
        return random_genotype(_random_seed(text))
    path = Path(text) if root is None else Path(root) / text
    is_file = not isinstance(source, str) or text.endswith(GENOTYPE_SUFFIX) or os.sep in text
    if text in GENOTYPES and not is_file:
        return GENOTYPES[text]
    if not is_file and not path.is_file():
        return get_genotype(text)
    return Genotype.from_dict(_read_json(path), f"genotype file {path}")


def _read_json(path: Path) -> Any:
    """The JSON value of a genotype file; GenotypeError naming the file otherwise."""
    where = f"genotype file {path}"
    if not path.exists():
        raise MissingInputError(f"{where} not found. {expected_shape()}")
    if path.is_dir():
        raise GenotypeError(f"{where} is a folder, not a JSON file. {expected_shape()}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise GenotypeError(f"{where} cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start : error.start + 1].hex()
        problem = f"is not UTF-8 text (byte 0x{byte} at offset {error.start}): a binary file?"
        raise GenotypeError(f"{where} {problem} {expected_shape()}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"is not JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        raise GenotypeError(f"{where} {problem}. {expected_shape()}") from None
