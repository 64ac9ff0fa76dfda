"""PC-DARTS backbones in MMDetection (method §7): the only package that imports OpenMMLab.

Importing it registers ``PCDARTSBackbone`` and ``PredictableSSDHead`` in MMDetection's
``MODELS`` registry; configs load it with ``custom_imports=dict(imports=['detection'])``.
"""

from detection.backbone import PCDARTSBackbone
from detection.checkpoint import convert_imagenet_checkpoint
from detection.ssd_head import PredictableSSDHead

__all__ = ["PCDARTSBackbone", "PredictableSSDHead", "convert_imagenet_checkpoint"]
