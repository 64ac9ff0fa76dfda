"""Evaluation shared by search (arch split) and training (test set)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from pcdarts.metrics import Average, topk_errors
from pcdarts.runtime import autocast, progress, to_device


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    bf16: bool = False,
    channels_last: bool = False,
    show_progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 error (%) over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    criterion = nn.CrossEntropyLoss()
    loss, top1, top5 = Average(), Average(), Average()
    try:
        for batch in progress(loader, desc, len(loader), show_progress):
            x, y = to_device(batch, device, channels_last)
            with autocast(device, bf16):
                logits = model(x).float()  # (N, classes): every model returns logits
            n = y.shape[0]
            e1, e5 = topk_errors(logits, y)
            loss.update(criterion(logits, y).item(), n)
            top1.update(e1, n)
            top5.update(e5, n)
    finally:
        model.train(was_training)
    return {
        "loss": loss.global_mean(device),
        "top1_err": top1.global_mean(device),
        "top5_err": top5.global_mean(device),
    }
