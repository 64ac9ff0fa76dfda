"""Cell diagrams in the style of Figure 2 of DARTS / PC-DARTS, drawn with matplotlib only.

    python -m reporting.diagrams --genotype pc_darts_cifar --out-dir figures --prefix cifar_

The nodes lie on an ellipse: the cell inputs c_{k-2}, c_{k-1} at the left, the output c_k
at the right and the intermediate nodes 0..n-1 left to right, alternately above and below.
On a convex curve no straight edge passes through a node it does not join. Each edge
carries its op name along its length, at the spot nearest its middle that overlaps the
fewest nodes, labels and other edges (a greedy search in a fixed order), so the same
genotype always gives the same PNG bytes (Agg backend, no timestamps or version metadata).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from pcdarts.genotypes import Genotype, load_genotype
from pcdarts.ops import PRIMITIVES
from pipeline.io import save_png

# Colours of the DARTS reference visualize.py (graphviz names): inputs darkseagreen2,
# intermediate nodes lightblue, output palegoldenrod.
INPUT_COLOUR = "#b4eeb4"
NODE_COLOUR = "#add8e6"
OUTPUT_COLOUR = "#eee8aa"
EDGE_COLOUR = "#555555"
OUTPUT_EDGE_COLOUR = "#999999"

# Geometry in data units; the axes have equal aspect, FIG_WIDTH_IN * DPI px wide.
ELLIPSE_A, ELLIPSE_B = 5.0, 2.7  # half-axes of the ellipse the nodes lie on
INPUT_ANGLE = 28.0  # degrees above / below the left end for c_{k-2} / c_{k-1}
STAGGER = 0.15  # of the arc spacing: how far upper nodes sit left of lower ones
NODE_HALF_W, NODE_HALF_H = 0.45, 0.3  # node boxes (c_{k-2} must fit inside)
MARGIN = 0.45  # around the outermost boxes
FIG_WIDTH_IN, DPI = 11.0, 100  # 1100 px wide
TITLE_SPACE = 0.07  # fraction of the figure height above the axes for the title
NODE_FONT, LABEL_FONT, TITLE_FONT = 14, 9.5, 14
LABEL_PAD = 0.06  # label background box padding, data units
PARALLEL_RAD = 0.25  # curvature step for several edges between the same two nodes

# Greedy label placement: candidate positions along the edge, nearest the middle first.
LABEL_POSITIONS = tuple(sorted(np.linspace(0.2, 0.8, 13).tolist(), key=lambda t: abs(t - 0.5)))
CURVE_SAMPLES = 60  # points per edge when counting how much of it a label would hide
OVERLAP_COST = 100.0  # per node or label a label would cover
HIDDEN_POINT_COST = 1.0  # per sampled point of another edge under a label
ARROW_CLEARANCE = 0.3  # free length kept before the arrowhead, data units
OFF_CENTRE_COST = 4.0  # per unit of |t - 0.5|: among equal spots, prefer the middle


@dataclass(frozen=True)
class _Edge:
    src: int  # state index: 0, 1 the inputs, 2.. the intermediate nodes, n+2 the output
    dst: int
    label: str  # op name; "" for the arrows into c_k
    rad: float  # arc3 curvature, 0 for a straight edge


def _check(gene: Sequence[tuple[str, int]], concat: Sequence[int]) -> int:
    """Number of intermediate nodes; raise ValueError on a malformed cell."""
    if not gene or len(gene) % 2:
        raise ValueError(f"a cell has two (op, input) pairs per node, got {len(gene)} pairs")
    steps = len(gene) // 2
    for k, (op, idx) in enumerate(gene):
        if op not in PRIMITIVES:
            raise ValueError(f"gene[{k}] op {op!r} is not one of {PRIMITIVES}")
        if not 0 <= idx < 2 + k // 2:
            raise ValueError(f"gene[{k}] reads state {idx}, not yet computed")
    for i in concat:
        if not 0 <= i < 2 + steps:
            raise ValueError(f"concat state {i} is not one of 0..{steps + 1}")
    return steps


def _layout(steps: int) -> np.ndarray:
    """(steps + 3, 2) node centres: inputs, intermediate nodes, output, on an ellipse."""
    start = 180.0 - INPUT_ANGLE
    angles = [start, -start]
    upper, lower = (steps + 1) // 2, steps // 2
    for k in range(steps):
        # Even nodes spread evenly over the upper arc from c_{k-2} to c_k, odd ones over
        # the lower arc; shifted a little against each other so that x grows with k.
        count, sign, shift = (upper, 1.0, -STAGGER) if k % 2 == 0 else (lower, -1.0, STAGGER)
        step = start / (count + 1)
        angles.append(sign * (start - (k // 2 + 1 + shift) * step))
    angles.append(0.0)
    rad = np.deg2rad(np.array(angles))
    return np.stack([ELLIPSE_A * np.cos(rad), ELLIPSE_B * np.sin(rad)], axis=1)


def _edges(gene: Sequence[tuple[str, int]], concat: Sequence[int], steps: int) -> list[_Edge]:
    edges: list[_Edge] = []
    seen: dict[tuple[int, int], int] = {}
    pairs = [(idx, 2 + k // 2, op) for k, (op, idx) in enumerate(gene)]
    pairs += [(i, steps + 2, "") for i in sorted(set(concat))]
    for src, dst, op in pairs:
        n = seen.get((src, dst), 0)
        seen[(src, dst)] = n + 1
        # The 2nd, 3rd, ... edge between the same two nodes bends +, -, ++, ...
        rad = 0.0 if n == 0 else PARALLEL_RAD * ((n + 1) // 2) * (1 if n % 2 else -1)
        edges.append(_Edge(src, dst, op, rad))
    return edges


def _bezier(p0: np.ndarray, p2: np.ndarray, rad: float, t: np.ndarray) -> np.ndarray:
    """Points (len(t), 2) of matplotlib's arc3 curve from p0 to p2 at parameters t."""
    d = p2 - p0
    p1 = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
    t = t[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2


def _visible_span(p0: np.ndarray, p2: np.ndarray) -> tuple[float, float]:
    """Parameters where a straight edge leaves the source box and enters the target box."""
    d = np.abs(p2 - p0) + 1e-9
    inset = min(NODE_HALF_W / d[0], NODE_HALF_H / d[1])
    return inset, 1.0 - inset


def _corners(centre: np.ndarray, angle: float, half_w: float, half_h: float) -> np.ndarray:
    """(4, 2) corners of a rectangle rotated by angle (radians) about its centre."""
    u = np.array([math.cos(angle), math.sin(angle)])
    v = np.array([-u[1], u[0]])
    return np.array(
        [
            centre + sx * half_w * u + sy * half_h * v
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
    )


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex quadrilaterals (4, 2) intersect (separating-axis test)."""
    for quad in (a, b):
        for i in range(2):
            edge = quad[i + 1] - quad[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _inside(points: np.ndarray, quad: np.ndarray) -> int:
    """How many of points (N, 2) lie in the rectangle quad (4, 2)."""
    u, v = quad[1] - quad[0], quad[3] - quad[0]
    rel = points - quad[0]
    a, b = rel @ u / (u @ u), rel @ v / (v @ v)
    return int(np.sum((a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)))


def _place_labels(
    edges: list[_Edge], pos: np.ndarray, sizes: dict[str, tuple[float, float]]
) -> list[tuple[np.ndarray, float]]:
    """(centre, angle in degrees) for each labelled edge, greedily in edge order."""
    nodes = [_corners(p, 0.0, NODE_HALF_W, NODE_HALF_H) for p in pos]
    ts = np.linspace(0.0, 1.0, CURVE_SAMPLES)
    curves = [_bezier(pos[e.src], pos[e.dst], e.rad, ts) for e in edges]
    placed: list[np.ndarray] = []
    out: list[tuple[np.ndarray, float]] = []
    for k, e in enumerate(edges):
        if not e.label:
            continue
        lo, hi = _visible_span(pos[e.src], pos[e.dst])
        length = (hi - lo) * float(np.linalg.norm(pos[e.dst] - pos[e.src]))
        half_w, half_h = (s / 2 + LABEL_PAD for s in sizes[e.label])
        best: tuple[float, np.ndarray, float] | None = None
        for t in LABEL_POSITIONS:
            tt = np.array([lo + t * (hi - lo) - 1e-3, lo + t * (hi - lo) + 1e-3])
            a, b = _bezier(pos[e.src], pos[e.dst], e.rad, tt)
            centre, angle = (a + b) / 2, math.atan2(b[1] - a[1], b[0] - a[0])
            if angle > math.pi / 2 or angle < -math.pi / 2:  # keep the text upright
                angle -= math.copysign(math.pi, angle)
            quad = _corners(centre, angle, half_w, half_h)
            cost = OFF_CENTRE_COST * abs(t - 0.5)
            # The label must leave the arrowhead (and the start of the edge) visible.
            along = t * length
            if along < half_w + LABEL_PAD or length - along < half_w + ARROW_CLEARANCE:
                cost += OVERLAP_COST
            cost += OVERLAP_COST * sum(_overlap(quad, q) for q in nodes + placed)
            cost += HIDDEN_POINT_COST * sum(
                _inside(c, quad) for j, c in enumerate(curves) if j != k
            )
            if best is None or cost < best[0]:
                best = (cost, quad, math.degrees(angle))
        assert best is not None
        placed.append(best[1])
        out.append(((best[1][0] + best[1][2]) / 2, best[2]))
    return out


def _node_text(state: int, steps: int) -> str:
    if state == 0:
        return r"$c_{k-2}$"
    if state == 1:
        return r"$c_{k-1}$"
    if state == steps + 2:
        return r"$c_{k}$"
    return str(state - 2)


def _node_colour(state: int, steps: int) -> str:
    if state < 2:
        return INPUT_COLOUR
    return OUTPUT_COLOUR if state == steps + 2 else NODE_COLOUR


def draw_cell(gene: Sequence[tuple[str, int]], concat: Sequence[int], title: str) -> Figure:
    """Draw one cell: inputs left, intermediate nodes in the middle, c_k right.

    gene: two (op, input) pairs per intermediate node, input 0/1 the cell inputs and
    i >= 2 intermediate node i - 2; concat: the states concatenated into c_k.
    Returns an Agg-backed figure, not shown and not registered with pyplot.
    """
    steps = _check(gene, concat)
    pos = _layout(steps)
    edges = _edges(gene, concat, steps)

    x_lim = ELLIPSE_A + NODE_HALF_W + MARGIN
    y_lim = ELLIPSE_B + NODE_HALF_H + MARGIN
    aspect = y_lim / x_lim
    fig = Figure(figsize=(FIG_WIDTH_IN, FIG_WIDTH_IN * aspect / (1 - TITLE_SPACE)), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - TITLE_SPACE))
    ax.set_xlim(-x_lim, x_lim)
    ax.set_ylim(-y_lim, y_lim)
    ax.set_aspect("equal")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=TITLE_FONT, y=1.0 - TITLE_SPACE / 4, va="top")

    # Label sizes in data units, measured with the renderer the PNG is drawn with.
    renderer = canvas.get_renderer()
    px_per_unit = fig.dpi * FIG_WIDTH_IN / (2 * x_lim)
    sizes: dict[str, tuple[float, float]] = {}
    for op in sorted({e.label for e in edges if e.label}):
        text = ax.text(0, 0, op, fontsize=LABEL_FONT)
        extent = text.get_window_extent(renderer)
        sizes[op] = (extent.width / px_per_unit, extent.height / px_per_unit)
        text.remove()

    boxes = []
    for state, (x, y) in enumerate(pos):
        box = FancyBboxPatch(
            (x - NODE_HALF_W, y - NODE_HALF_H),
            2 * NODE_HALF_W,
            2 * NODE_HALF_H,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=_node_colour(state, steps),
            edgecolor="black",
            linewidth=1.2,
            zorder=3,
        )
        ax.add_patch(box)
        ax.text(
            x, y, _node_text(state, steps), fontsize=NODE_FONT, ha="center", va="center", zorder=4
        )
        boxes.append(box)

    for e in edges:
        ax.add_patch(
            FancyArrowPatch(
                tuple(pos[e.src]),
                tuple(pos[e.dst]),
                connectionstyle=f"arc3,rad={e.rad}",
                arrowstyle="-|>",
                mutation_scale=16,
                shrinkA=1,
                shrinkB=1,
                patchA=boxes[e.src],
                patchB=boxes[e.dst],
                linewidth=1.3,
                zorder=2,
                color=EDGE_COLOUR if e.label else OUTPUT_EDGE_COLOUR,
            )
        )

    labelled = [e for e in edges if e.label]
    pad = LABEL_PAD * px_per_unit * 72 / DPI / LABEL_FONT  # bbox pad is in font sizes
    for e, (centre, angle) in zip(labelled, _place_labels(edges, pos, sizes), strict=True):
        ax.text(
            centre[0],
            centre[1],
            e.label,
            fontsize=LABEL_FONT,
            rotation=angle,
            rotation_mode="anchor",
            ha="center",
            va="center",
            zorder=5,
            bbox={
                "boxstyle": f"round,pad={pad:.3f}",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.9,
            },
        )
    return fig


def save_cell_diagrams(genotype: Genotype, out_dir: Path, prefix: str = "") -> dict[str, Path]:
    """Write ``<prefix>normal.png`` and ``<prefix>reduction.png`` into out_dir.

    Returns {"normal": path, "reduction": path}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = prefix.strip(" _-.")
    cells = {
        "normal": (genotype.normal, genotype.normal_concat),
        "reduction": (genotype.reduce, genotype.reduce_concat),
    }
    paths: dict[str, Path] = {}
    for cell, (gene, concat) in cells.items():
        title = f"{name}: {cell} cell" if name else f"{cell.capitalize()} cell"
        fig = draw_cell(gene, concat, title)
        paths[cell] = out_dir / f"{prefix}{cell}.png"
        save_png(fig, paths[cell], DPI)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--genotype",
        required=True,
        help="a registered genotype name, or a JSON file of Genotype.to_dict()",
    )
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args(argv)
    genotype = load_genotype(args.genotype)
    for path in save_cell_diagrams(genotype, args.out_dir, args.prefix).values():
        print(path)


if __name__ == "__main__":
    main()
