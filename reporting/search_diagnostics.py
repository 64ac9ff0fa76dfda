"""Each search in the report (issue 25): did it settle, collapse or stop, and the curves
that show it: every edge's softmaxed alphas and edge weight, the derived cell's skip
connections and parameter-free ops, the changed (op, input) pairs and the Hessian's
largest eigenvalue when measured, with the weight-only warm-up marked "architecture frozen"
(the genotype cannot change there: nobody should read it as a stuck search)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pcdarts.diagnostics import CELLS, EDGE_WEIGHT, edge_names, op_counts
from pcdarts.genotypes import Genotype
from pcdarts.ops import PRIMITIVES
from pcdarts.space import INPUTS_PER_NODE, NODES

PAIRS = NODES * INPUTS_PER_NODE  # (op, input) pairs of a derived cell (method §4)
# A normal cell with half of its pairs parameter-free has collapsed: the failure DARTS+
# (Liang et al. 2019) and RobustDARTS (Zela et al. 2020) describe; their rules already
# stop at 2 skip connections, so this flags only a collapse well under way.
COLLAPSED_PARAM_FREE = PAIRS // 2
# Settled: the genotype held over the last quarter of the epochs that searched, as the
# report's decision sentence reads a search (reporting/results.py)
SETTLED_TAIL = 0.25
PANEL_COLUMNS = 7  # edge panels per row of the figure: two rows per cell of 14 edges
FROZEN = "architecture frozen (weight-only warm-up)"


def verdict(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a search did, from its history: ``status`` (stopped, collapsed, settled or
    still changing) and the numbers behind it."""
    last = history[-1]
    frozen = [int(h["epoch"]) for h in history if h.get("arch_frozen", False)]
    first_searched = max(frozen) + 1 if frozen else int(history[0]["epoch"])
    searched = len(history) - len(frozen)
    unchanged_from = max(int(last["stable_since_epoch"]), first_searched)
    stable = int(last["epoch"]) + 1 - unchanged_from
    counts = op_counts(Genotype.from_dict(last["genotype"]))
    measured = [h["hessian"] for h in history if "hessian" in h]
    values = [m["eigenvalue"] for m in measured if m["eigenvalue"] is not None]
    stop = last.get("stop")
    if stop is not None:
        status = "stopped"
    elif counts["param_free_normal"] >= COLLAPSED_PARAM_FREE:
        status = "collapsed"
    elif searched > 0 and stable / searched >= SETTLED_TAIL:
        status = "settled"
    else:
        status = "still changing"
    return {
        "status": status,
        "epochs": len(history),
        "frozen_epochs": len(frozen),
        "unchanged_from_epoch": unchanged_from,
        "stable_searched_epochs": stable,
        **counts,
        "eigenvalues": len(values),
        "eigenvalues_not_finite": len(measured) - len(values),
        "eigenvalue_first": values[0] if values else None,
        "eigenvalue_last": values[-1] if values else None,
        "stop": stop,
    }


def sentence(name: str, v: dict[str, Any]) -> str:
    """One plain paragraph on a search's verdict."""
    frozen = v["frozen_epochs"]
    span = "epoch 0 was" if frozen == 1 else f"epochs 0-{frozen - 1} were"
    warmup = f"{span} the weight-only warm-up (architecture frozen); " if frozen else ""
    searched = v["epochs"] - v["frozen_epochs"]
    if v["status"] == "stopped":
        stop = v["stop"]
        what = f"stopped by the {stop['rule']} rule after epoch {stop['epoch']}: {stop['reason']}"
    elif v["status"] == "collapsed":
        what = (
            f"collapsed: {v['param_free_normal']} of the normal cell's {PAIRS} pairs are "
            "parameter-free ops"
        )
    elif v["status"] == "settled":
        what = (
            f"settled: its cell held for the last {v['stable_searched_epochs']} of its "
            f"{searched} searching epochs"
        )
    else:
        what = (
            f"still changing: its cell held only for the last {v['stable_searched_epochs']} "
            f"of its {searched} searching epochs"
        )
    cell = (
        f"normal cell {v['skip_connections_normal']} skip connections and "
        f"{v['param_free_normal']} parameter-free ops of {PAIRS}, reduction cell "
        f"{v['param_free_reduce']}"
    )
    if v["eigenvalues"]:
        eigen = (
            f"Hessian eigenvalue {v['eigenvalue_first']:.4g} at its first evaluation, "
            f"{v['eigenvalue_last']:.4g} at its last ({v['eigenvalues']} evaluations"
            + (f", {v['eigenvalues_not_finite']} not finite" if v["eigenvalues_not_finite"] else "")
            + ")"
        )
    elif v["eigenvalues_not_finite"]:
        eigen = f"every Hessian evaluation ({v['eigenvalues_not_finite']}) was NaN or inf"
    else:
        eigen = "Hessian eigenvalue not measured (loop.diagnostics.hessian: false)"
    return f"{name}, {v['epochs']} epochs: {warmup}{what}. {cell}; {eigen}."


def table(verdicts: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """A row per search: its status and the numbers behind it."""
    header = [
        "search",
        "status",
        "epochs (frozen)",
        "cell unchanged from epoch",
        "skips, normal",
        "param-free, normal",
        "param-free, reduction",
        "eigenvalue first / last",
    ]
    rows = []
    for name, v in verdicts.items():
        eigen = (
            f"{v['eigenvalue_first']:.3g} / {v['eigenvalue_last']:.3g}" if v["eigenvalues"] else "—"
        )
        rows.append(
            [
                name,
                v["status"],
                f"{v['epochs']} ({v['frozen_epochs']})",
                str(v["unchanged_from_epoch"]),
                str(v["skip_connections_normal"]),
                str(v["param_free_normal"]),
                str(v["param_free_reduce"]),
                eigen,
            ]
        )
    return header, rows


def _marks(ax: Axes, history: Sequence[dict[str, Any]]) -> None:
    """Shade the warm-up ("architecture frozen") and draw the stop, if any."""
    frozen = [h["epoch"] for h in history if h.get("arch_frozen", False)]
    if frozen:
        ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="grey", alpha=0.15, lw=0)
    stop = history[-1].get("stop")
    if stop is not None:
        ax.axvline(stop["epoch"], color="red", lw=1)


def figure(history: Sequence[dict[str, Any]], title: str) -> Figure:
    """A search's trajectories: a panel per edge (softmaxed alphas, edge weight dashed),
    the cell's op counts, the changed pairs and the eigenvalue; warm-up shaded grey, a stop
    drawn red."""
    epochs = [h["epoch"] for h in history]
    edges = len(history[0]["alphas_normal"])
    rows_per_cell = -(-edges // PANEL_COLUMNS)
    fig = Figure(figsize=(22, 3 * rows_per_cell * len(CELLS)), layout="constrained")
    grid = fig.add_gridspec(rows_per_cell * len(CELLS), PANEL_COLUMNS + 2)
    handles: list[Any] = []
    for c, cell in enumerate(CELLS):
        alphas = np.asarray([h[f"alphas_{cell}"] for h in history])  # (T, E, 8), softmaxed
        betas = [h.get(f"betas_{cell}") for h in history]
        for e, edge in enumerate(edge_names(edges)):
            ax = fig.add_subplot(grid[c * rows_per_cell + e // PANEL_COLUMNS, e % PANEL_COLUMNS])
            lines = [
                ax.plot(epochs, alphas[:, e, o], lw=1, color=f"C{o}", label=op)[0]
                for o, op in enumerate(PRIMITIVES)
            ]
            if all(b is not None for b in betas):
                weights = [b[e] for b in betas]  # type: ignore[index]
                lines.append(ax.plot(epochs, weights, "k--", lw=1, label=EDGE_WEIGHT)[0])
            handles = handles or lines
            _marks(ax, history)
            ax.set_title(f"{cell} {edge}", fontsize=8)
            ax.tick_params(labelsize=6)
    side = [fig.add_subplot(grid[i, PANEL_COLUMNS:]) for i in range(3)]
    for key, style in (
        ("skip_connections_normal", "C3-"),
        ("param_free_normal", "C1-"),
        ("skip_connections_reduce", "C3:"),
        ("param_free_reduce", "C1:"),
    ):
        side[0].plot(epochs, [h[key] for h in history], style, marker="o", ms=3, label=key)
    side[0].set_title("derived cell: skip connections, parameter-free ops", fontsize=9)
    side[0].set_ylim(-0.3, PAIRS + 0.3)
    side[0].legend(fontsize=7)
    for cell in CELLS:
        side[1].plot(
            epochs, [h[f"changed_pairs_{cell}"] for h in history], marker="o", ms=3, label=cell
        )
    side[1].set_title("(op, input) pairs changed since the epoch before", fontsize=9)
    side[1].legend(fontsize=7)
    measured = [(h["epoch"], h["hessian"]["eigenvalue"]) for h in history if "hessian" in h]
    finite = [(e, v) for e, v in measured if v is not None]
    if finite:
        side[2].plot(*zip(*finite, strict=True), marker="o", ms=3)
        for e, v in measured:
            if v is None:
                side[2].axvline(e, color="purple", ls=":", lw=1)  # NaN or inf there
    else:
        side[2].text(
            0.5, 0.5, "not measured", ha="center", va="center", transform=side[2].transAxes
        )
    side[2].set_title("Hessian's largest eigenvalue (arch-split loss)", fontsize=9)
    for ax in side:
        _marks(ax, history)
        ax.set_xlabel("epoch", fontsize=8)
    legend = fig.add_subplot(grid[3:, PANEL_COLUMNS:]) if rows_per_cell * len(CELLS) > 3 else None
    if legend is not None:
        legend.axis("off")
        legend.legend(handles=handles, loc="center", fontsize=8, title=f"grey: {FROZEN}")
    fig.suptitle(title)
    return fig
