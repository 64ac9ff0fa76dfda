"""The PC-DARTS ImageNet network as an MMDetection backbone (method §7: SSD on MS-COCO).

Registered as ``PCDARTSBackbone`` in MMDetection's ``MODELS``: the final ImageNet network
of ``pcdarts.create_model("pcdarts_imagenet")`` without its classifier, returning the outputs of the
cells named by ``out_indices`` as a tuple of feature maps, the shape the SSD neck takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from detection.checkpoint import BACKBONE_PREFIX, load_backbone_state
from pcdarts import create_model, load_genotype
from pcdarts.config import IMAGENET_NETWORK_SHAPE
from pcdarts.network import cell_outputs
from pcdarts.space import MIN_LAYERS


@MODELS.register_module()
class PCDARTSBackbone(BaseModule):
    """Stem and cells of the ImageNet final network; forward returns the cells in
    ``out_indices``, each (N, C_i, H / s_i, W / s_i) with s_i in {8, 16, 32}.

    Args:
        genotype: registry name, path of a genotype JSON file, or ``Genotype.to_dict()``.
        C: initial channels (default: the ImageNet mobile setting's, method §6).
        layers: number of cells (default: the same setting's).
        out_indices: cells whose outputs are returned, increasing.
        frozen_stages: -1 trains everything; 0 freezes the stem; k > 0 the stem and the
            first k cells (weights fixed, BatchNorm in eval mode).
        norm_eval: keep every BatchNorm in eval mode during training (running statistics
            fixed), as detectors with small per-GPU batches do.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` for weights converted by
            :func:`detection.checkpoint.convert_imagenet_checkpoint`; loaded strictly.
    """

    def __init__(
        self,
        genotype: str | dict[str, Any] = "pc_darts_imagenet",
        C: int = IMAGENET_NETWORK_SHAPE.C,  # noqa: N803 - the paper's name
        layers: int = IMAGENET_NETWORK_SHAPE.layers,
        out_indices: Sequence[int] = (8, 13),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        _check_arguments(C, layers, out_indices, frozen_stages, init_cfg)
        super().__init__(init_cfg=init_cfg)
        # The classifier is dropped; its 10 classes keep the random stream of earlier runs.
        network = create_model(
            "pcdarts_imagenet",
            genotype=load_genotype(genotype),
            C=C,
            layers=layers,
            num_classes=10,
            auxiliary=False,
        )
        self.genotype = network.genotype
        self.stem = network.stem
        self.cells = network.cells
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        # The network's own account of its cells (timm's feature_info): channels and strides.
        self.feature_info = [network.feature_info[i] for i in self.out_indices]
        self.channels = tuple(int(info["num_chs"]) for info in self.feature_info)
        self.strides = tuple(int(info["reduction"]) for info in self.feature_info)
        self._freeze_stages()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """x: (N, 3, H, W) -> the cells in ``out_indices``, (N, C_i, H / s_i, W / s_i)."""
        stop = self.out_indices[-1] + 1  # no drop path in detection
        cells = cell_outputs(self.stem, self.cells, x, drop_prob=0.0, stop=stop)
        return tuple(out for i, out in enumerate(cells) if i in self.out_indices)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_stages`` cells (none for -1)."""
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.cells[: self.frozen_stages]]

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> PCDARTSBackbone:
        """Train mode, keeping frozen modules (and with ``norm_eval`` every BN) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Load ``init_cfg``'s pretrained weights strictly: a missing or unexpected key is an
        error naming the file (MMEngine's own ``Pretrained`` only warns)."""
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get("type") == "Pretrained"):
            super().init_weights()
            return
        checkpoint = str(self.init_cfg["checkpoint"])
        prefix = str(self.init_cfg.get("prefix", BACKBONE_PREFIX))
        state = load_backbone_state(checkpoint, prefix)
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes differ: another C or genotype
            raise ValueError(f"{checkpoint} does not fit this PCDARTSBackbone: {error}") from None
        if missing or unexpected:
            raise ValueError(
                f"{checkpoint} does not fit PCDARTSBackbone(C, layers, genotype): missing "
                f"{sorted(missing)[:5]} ({len(missing)}), unexpected {sorted(unexpected)[:5]} "
                f"({len(unexpected)})"
            )
        self._is_init = True


def _check_arguments(
    C: int,  # noqa: N803
    layers: int,
    out_indices: Sequence[int],
    frozen_stages: int,
    init_cfg: dict[str, Any] | None,
) -> None:
    if C < 2 or C % 2:
        raise ValueError(f"PCDARTSBackbone: C must be an even number >= 2, got {C}")
    if layers < MIN_LAYERS:
        raise ValueError(
            f"PCDARTSBackbone: layers must be >= {MIN_LAYERS} (two reductions), got {layers}"
        )
    indices = list(out_indices)
    if not indices or indices != sorted(set(indices)):
        raise ValueError(f"PCDARTSBackbone: out_indices must increase, got {out_indices}")
    if indices[0] < 0 or indices[-1] >= layers:
        raise ValueError(
            f"PCDARTSBackbone: out_indices {out_indices} outside cells 0..{layers - 1}"
        )
    if not -1 <= frozen_stages <= layers:
        raise ValueError(
            f"PCDARTSBackbone: frozen_stages must be in -1..{layers}, got {frozen_stages}"
        )
    if init_cfg is not None and init_cfg.get("type") == "Pretrained":
        if "checkpoint" not in init_cfg:
            raise ValueError("PCDARTSBackbone: init_cfg type 'Pretrained' needs a 'checkpoint'")
        checkpoint = str(init_cfg["checkpoint"])
        if "://" not in checkpoint and not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"PCDARTSBackbone: pretrained checkpoint {checkpoint} not found"
            )
