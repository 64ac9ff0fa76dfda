"""The search-dynamics figure: softmaxed alphas, edge weights and alpha entropy per epoch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pcdarts.ops import PRIMITIVES


def search_dynamics_figure(history: list[dict[str, Any]], title: str) -> Figure:
    """Per cell type: final softmaxed alphas (edge x op), betas per edge over epochs, entropy."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    for row, kind in enumerate(("normal", "reduce")):
        alphas = np.asarray(history[-1][f"alphas_{kind}"], dtype=np.float64)  # softmaxed
        ax = axes[row, 0]
        image = ax.imshow(alphas, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("edge")
        ax.set_title(f"{kind}: softmax(alpha), last epoch")
        fig.colorbar(image, ax=ax)
        ax = axes[row, 1]
        betas = [h.get(f"betas_{kind}") for h in history]
        if all(b is not None for b in betas):
            weights = np.asarray(betas, dtype=np.float64)
            for edge in range(weights.shape[1]):
                ax.plot(epochs, weights[:, edge], lw=1)
            ax.set_title(f"{kind}: edge weights (softmaxed beta per node)")
        else:
            ax.set_title(f"{kind}: no betas (edge normalisation off)")
        ax.set_xlabel("epoch")
        ax = axes[row, 2]
        ax.plot(epochs, [h[f"alpha_entropy_{kind}"] for h in history], marker="o")
        ax.axhline(math.log(len(PRIMITIVES)), color="grey", ls="--", lw=1, label="uniform")
        ax.set_title(f"{kind}: mean alpha entropy")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    return fig
