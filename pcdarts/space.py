"""The shape of the DARTS cell space (method §1), written once.

How many nodes a cell has, what each reads, and which cells of a network reduce: the
supernet, the final network, the fused cell, genotypes and the params rules read these
here. No torch import, so the config schema can use them (pipeline/param_rules.py).
"""

from __future__ import annotations

NODES = 4  # intermediate nodes per cell (method §1)
CELL_INPUTS = 2  # a cell reads the outputs of the two cells before it (method §1)
INPUTS_PER_NODE = 2  # a derived cell keeps two incoming edges per node (method §4)
MIN_LAYERS = 3  # a normal cell and the two reduction cells (at 1/3 and 2/3 depth)


def reduction_cells(layers: int) -> tuple[int, int]:
    """The indices of the two reduction cells of a ``layers``-cell network, at 1/3 and 2/3
    of the depth (method §1); the auxiliary head reads the second one's output (§6)."""
    return layers // 3, 2 * layers // 3


def edges_per_cell(nodes: int = NODES) -> int:
    """A cell's edges: node j reads the two cell inputs and the j nodes before it (14 for 4)."""
    return sum(CELL_INPUTS + j for j in range(nodes))


def steps_for_edges(num_edges: int) -> int:
    """Number of intermediate nodes n of a cell with n(n+3)/2 edges (14 -> 4)."""
    steps = 0
    while steps * (steps + 3) // 2 < num_edges:
        steps += 1
    if steps * (steps + 3) // 2 != num_edges:
        raise ValueError(f"{num_edges} edges is not n(n+3)/2 for any number of nodes n")
    return steps
