"""ImageNet checkpoints of ``stages.train`` -> MMDetection backbone weights.

``outputs/train_imagenet/<cell>/model.pt`` holds ``{"model": state_dict, "genotype": dict,
"network": {dataset, C, layers, num_classes, auxiliary}, "params": ...}``. A detector keeps
the stem and the cells; the classifier and the auxiliary head are ImageNet's only. The
converted file is MMDetection's layout, ``{"state_dict": {"backbone.<key>": tensor},
"meta": ...}``, loadable as ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

BACKBONE_PREFIX = "backbone."  # where MMDetection's detectors keep their backbone
# Modules of the ImageNet network that classify; a detector replaces them by its heads.
CLASSIFIER_PREFIXES = ("classifier.", "auxiliary_head.", "global_pooling.")
EXTRA_STATE = "_extra_state"  # the network's genotype and drop-path probability, not weights


def convert_imagenet_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """``stages.train``'s ImageNet checkpoint -> ``{"state_dict", "meta"}`` of the backbone.

    Keeps the stem and cell weights (and BN statistics), prefixed with ``backbone.``; drops
    the classifier, the auxiliary head and the extra state. ``meta`` keeps the genotype
    and the network size, so the backbone can be rebuilt to match.
    """
    missing = {"model", "genotype", "network"} - set(checkpoint)
    if missing:
        raise ValueError(f"not a stages.train checkpoint: it lacks {sorted(missing)}")
    network = checkpoint["network"]
    if network.get("dataset") != "imagenet":
        raise ValueError(
            f"a detection backbone needs the ImageNet network (its stem keeps 1/8 resolution), "
            f"this checkpoint is the {network.get('dataset')!r} network"
        )
    state: dict[str, Tensor] = {
        BACKBONE_PREFIX + key: value
        for key, value in checkpoint["model"].items()
        if not key.startswith(CLASSIFIER_PREFIXES) and key != EXTRA_STATE
    }
    meta = {
        "genotype": checkpoint["genotype"],
        "C": int(network["C"]),
        "layers": int(network["layers"]),
        "converted_from": "pcdarts ImageNet network (stages.train)",
    }
    return {"state_dict": state, "meta": meta}


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state`` under ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def load_backbone_state(path: str | Path, prefix: str = BACKBONE_PREFIX) -> dict[str, Tensor]:
    """The backbone's state dict from a converted checkpoint file (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint {path} not found")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict with a 'state_dict', got {type(saved)}")
    backbone = strip_prefix(state, prefix)
    if not backbone:
        raise ValueError(f"{path}: no weights under the prefix {prefix!r}")
    return backbone
