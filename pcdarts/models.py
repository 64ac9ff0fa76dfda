"""The model registry (timm-style): every model is built by name through :func:`create_model`.

    create_model("pcdarts_supernet_cifar10")                 # the CIFAR-10 search, method §5
    create_model("pcdarts_imagenet", genotype=g, C=12, layers=6, num_classes=10)

A name fixes the variant's paper defaults (a :class:`SupernetConfig` or
:class:`NetworkConfig`); keyword overrides replace single fields, and an unknown field fails
with its name. Every model's ``forward`` returns logits (N, classes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, Literal, overload

from pcdarts.config import (
    IMAGENET_CLASSES,
    IMAGENET_NETWORK,
    IMAGENET_SEARCH_NETWORK,
)
from pcdarts.fused import FusedSearchCell
from pcdarts.genotypes import get_genotype
from pcdarts.network import Network, NetworkConfig
from pcdarts.supernet import SearchCell, Supernet, SupernetConfig

# The variants' defaults. Supernets: method §5; final networks: method §6 (the paper's cells,
# method §7). CIFAR-10 ones are the configs' own defaults.
SUPERNET_CIFAR10 = SupernetConfig()
SUPERNET_IMAGENET = SupernetConfig(
    stem="imagenet", num_classes=IMAGENET_CLASSES, **asdict(IMAGENET_SEARCH_NETWORK)
)
NETWORK_CIFAR10 = NetworkConfig()
NETWORK_IMAGENET = NetworkConfig(
    genotype=get_genotype("pc_darts_imagenet"),
    stem="imagenet",
    num_classes=IMAGENET_CLASSES,
    **asdict(IMAGENET_NETWORK),
)

_MODELS: dict[str, Callable[..., Supernet | Network]] = {}


def register_model(factory: Callable[..., Supernet | Network]) -> Callable[..., Any]:
    """Register ``factory`` under its function name."""
    _MODELS[factory.__name__] = factory
    return factory


def _supernet(config: SupernetConfig) -> Supernet:
    """The supernet of ``config``, its cells the fused ones unless ``config.fused`` is False."""
    return Supernet(config, FusedSearchCell if config.fused else SearchCell)


@register_model
def pcdarts_supernet_cifar10(**overrides: Any) -> Supernet:
    """The CIFAR-10 supernet: 3x3 stem, C=16, 8 cells, K=4, edge normalisation (method §5)."""
    return _supernet(replace(SUPERNET_CIFAR10, **overrides))


@register_model
def pcdarts_supernet_imagenet(**overrides: Any) -> Supernet:
    """The ImageNet supernet: three stride-2 convs, C=16, 8 cells, K=2 (method §5)."""
    return _supernet(replace(SUPERNET_IMAGENET, **overrides))


@register_model
def pcdarts_cifar10(**overrides: Any) -> Network:
    """The CIFAR-10 evaluation network: C=36, 20 cells, auxiliary head (method §6)."""
    return Network(replace(NETWORK_CIFAR10, **overrides))


@register_model
def pcdarts_imagenet(**overrides: Any) -> Network:
    """The ImageNet network (mobile setting): C=48, 14 cells, auxiliary head (method §6)."""
    return Network(replace(NETWORK_IMAGENET, **overrides))


def list_models() -> list[str]:
    """The registered names, sorted."""
    return sorted(_MODELS)


@overload
def create_model(
    name: Literal["pcdarts_supernet_cifar10", "pcdarts_supernet_imagenet"], **overrides: Any
) -> Supernet: ...
@overload
def create_model(
    name: Literal["pcdarts_cifar10", "pcdarts_imagenet"], **overrides: Any
) -> Network: ...
@overload
def create_model(name: str, **overrides: Any) -> Supernet | Network: ...
def create_model(name: str, **overrides: Any) -> Supernet | Network:
    """The model registered as ``name``, its config's fields replaced by ``overrides``.

    Raises ValueError for an unknown name (listing the known ones) and TypeError for an
    unknown field.
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    return factory(**overrides)
