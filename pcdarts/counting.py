"""Parameter and mult-add counts (method §7).

Two mult-add conventions, both counted on one eval-mode forward (the auxiliary head,
which only runs in training, is never counted):

- ``"conv_linear"``: multiply-accumulates of convolutions and linear layers only, from
  PyTorch's maintained :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2).
- ``"paper"``: the above plus 2 per BatchNorm output element and 1 per ReLU output
  element, which is what the paper's counter did (586 M / 597 M for the ImageNet cells).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

CONVENTIONS = ("paper", "conv_linear")
BN_OPS_PER_ELEMENT = 2  # scale and shift (the paper's counter)
RELU_OPS_PER_ELEMENT = 1


def count_params(model: nn.Module) -> float:
    """Parameters in millions, excluding the auxiliary head (as the reference counts)."""
    return sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n) / 1e6


@torch.no_grad()
def count_macs(
    model: nn.Module, input_size: int | Sequence[int], convention: str = "paper"
) -> float:
    """Mult-adds in millions of one forward of a single image of ``input_size`` (H, W).

    The model is put in eval mode for the count and restored afterwards.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    param = next(model.parameters())
    x = torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype)

    elementwise = 0

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal elementwise
        per = BN_OPS_PER_ELEMENT if isinstance(module, nn.BatchNorm2d) else RELU_OPS_PER_ELEMENT
        elementwise += per * output.numel()

    handles = []
    if convention == "paper":
        handles = [
            m.register_forward_hook(hook)
            for m in model.modules()
            if isinstance(m, nn.BatchNorm2d | nn.ReLU)
        ]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return (counter.get_total_flops() / 2 + elementwise) / 1e6
