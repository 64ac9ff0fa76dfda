"""A cell's size at the paper's scale: parameters and mult-adds in both conventions."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pcdarts import count_macs, count_params, create_model
from pcdarts.genotypes import Genotype
from pipeline.config import DeriveParams


def paper_scale_counts(genotype: Genotype, dp: DeriveParams) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for name, net, size, classes in (
        ("cifar10", dp.cifar_network, dp.cifar_image_size, dp.cifar_classes),
        ("imagenet", dp.imagenet_network, dp.imagenet_image_size, dp.imagenet_classes),
    ):
        model = create_model(
            f"pcdarts_{name}", genotype=genotype, num_classes=classes, **asdict(net)
        )
        counts[f"{name}/params_m"] = count_params(model)
        counts[f"{name}/macs_m"] = count_macs(model, size, "paper")
        counts[f"{name}/macs_conv_linear_m"] = count_macs(model, size, "conv_linear")
    counts["imagenet/over_mobile_budget"] = counts["imagenet/macs_m"] > dp.mobile_budget_macs_m
    counts["mobile_budget_macs_m"] = dp.mobile_budget_macs_m
    return counts
