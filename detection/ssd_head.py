"""MMDetection 3.3.0's ``SSDHead`` with its prediction-time crash fixed.

``SSDHead.__init__`` skips ``AnchorHead.__init__`` and so never sets ``self.loss_cls``
(its softmax cross-entropy is written inline in ``loss_by_feat``), but
``BaseDenseHead._predict_by_feat_single`` reads ``self.loss_cls`` since 3.3.0, so every
validation or test of an SSD fails with ``'SSDHead' object has no attribute 'loss_cls'``.
Upstream: https://github.com/open-mmlab/mmdetection/issues/11780 (open; also #11063,
#11305, fix proposed in PR #11524). Drop this class when MMDetection releases the fix.
"""

from __future__ import annotations

from typing import Any

from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS


@MODELS.register_module()
class PredictableSSDHead(SSDHead):
    """``SSDHead`` that can predict: ``loss_cls`` exists and is ``None``.

    ``None`` has no ``custom_cls_channels``, so prediction takes the softmax branch that
    SSD's ``use_sigmoid_cls = False`` asks for; training is unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_cls = None  # mmdetection#11780: read by BaseDenseHead at prediction
