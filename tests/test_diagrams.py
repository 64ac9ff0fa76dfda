"""Cell diagrams (reporting/diagrams.py): valid, deterministic PNGs for every registry genotype."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.patches import FancyArrowPatch

from pcdarts import GENOTYPES, get_genotype
from reporting.diagrams import draw_cell, save_cell_diagrams

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG format puts first."""
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("name", ["pc_darts_cifar", "pc_darts_imagenet", "darts_v2"])
def test_writes_both_cells_as_pngs(name: str, tmp_path: Path) -> None:
    assert name in GENOTYPES
    paths = save_cell_diagrams(get_genotype(name), tmp_path, prefix=f"{name}_")
    assert paths == {
        "normal": tmp_path / f"{name}_normal.png",
        "reduction": tmp_path / f"{name}_reduction.png",
    }
    for path in paths.values():
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        width, height = _png_size(data)
        assert width >= 600 and height >= 300
        assert len(data) > 5_000
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_same_genotype_gives_same_bytes(tmp_path: Path) -> None:
    genotype = get_genotype("pc_darts_cifar")
    first = save_cell_diagrams(genotype, tmp_path / "a")
    second = save_cell_diagrams(genotype, tmp_path / "b")
    for cell in ("normal", "reduction"):
        assert first[cell].read_bytes() == second[cell].read_bytes()
    # Overwriting in place is fine too.
    again = save_cell_diagrams(genotype, tmp_path / "a")
    assert again["normal"].read_bytes() == second["normal"].read_bytes()


def test_different_genotypes_give_different_pngs(tmp_path: Path) -> None:
    cifar = save_cell_diagrams(get_genotype("pc_darts_cifar"), tmp_path, prefix="cifar_")
    imagenet = save_cell_diagrams(get_genotype("pc_darts_imagenet"), tmp_path, prefix="imagenet_")
    for cell in ("normal", "reduction"):
        assert cifar[cell].read_bytes() != imagenet[cell].read_bytes()


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_any_number_of_nodes(steps: int) -> None:
    ops = ["sep_conv_3x3", "skip_connect", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3"]
    gene = [(ops[(2 * k + j) % len(ops)], (k + j) % (k + 2)) for k in range(steps) for j in (0, 1)]
    concat = list(range(2, 2 + steps))
    fig = draw_cell(gene, concat, f"{steps} nodes")
    ax = fig.axes[0]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(gene) + len(concat)  # one per op, one per concatenated state
    texts = [t.get_text() for t in ax.texts]
    for op, _ in gene:
        assert op in texts
    assert {str(i) for i in range(steps)} <= set(texts)
    assert {r"$c_{k-2}$", r"$c_{k-1}$", r"$c_{k}$"} <= set(texts)


@pytest.mark.parametrize(
    ("gene", "concat", "match"),
    [
        ([("sep_conv_3x3", 0)], [2], "two"),
        ([("conv_7x7", 0), ("skip_connect", 1)], [2], "not one of"),
        ([("sep_conv_3x3", 0), ("skip_connect", 2)], [2], "not yet computed"),
        ([("sep_conv_3x3", 0), ("skip_connect", 1)], [3], "concat"),
    ],
)
def test_rejects_malformed_cells(
    gene: list[tuple[str, int]], concat: list[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        draw_cell(gene, concat, "bad")
