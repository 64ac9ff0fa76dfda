"""The paper's memory claim as a table: what ``benchmarks/memory_k.py`` measured (one search
step of the CIFAR-10 supernet at the paper's sizes, per K and batch), beside the statement.

``make bench-memory`` writes the measurement to ``MEMORY_K_FILE`` (committed: a measurement
of a named machine, not a result of this run); the benchmark prints, the report shows and the
README holds (``python -m reporting.memory_k readme``) the same table built here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pcdarts.errors import UserError
from pipeline.io import write_text

MEMORY_K_FILE = Path("benchmarks/results/memory_k.json")
README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- memory-k:begin -->", "<!-- memory-k:end -->"
MB_PER_GB = 1000.0  # the benchmark's peaks are in MB (1e6 bytes, pcdarts.profiling), shown in GB
# The paper's statement (method §2, §5), shown beside the table.
PAPER = (
    "Paper: K=4 cuts the supernet's memory to about 1/4, so one 11 GB GTX 1080Ti takes batch "
    "256 instead of DARTS' 64 and the search runs about 4x faster (0.1 against 1.0 GPU-days "
    "with the second-order DARTS)."
)
NOT_MEASURED = (
    f"Not measured in this checkout: `make bench-memory` writes {MEMORY_K_FILE} (a few minutes "
    "on a CPU, `ARGS=--device cuda` on a GPU) and the report shows it here."
)


def cell(run: dict[str, Any]) -> str:
    """A (K, batch) run: its seconds per step and peak, or why it has none."""
    if "step_s" in run:
        return f"{run['step_s']:.2f} s, {run['peak_mb'] / MB_PER_GB:.2f} GB"
    return str(run["does_not_fit"])


def grid(
    rows: list[dict[str, Any]], batches: list[int], budget_gb: float
) -> tuple[list[str], list[list[str]]]:
    """The table: per K the asked batches, the memory per image, K=1's memory per image over
    this K's, and the largest batch within ``budget_gb`` with an epoch's minutes there."""
    base = next((r for r in rows if r["k"] == 1 and "mb_per_image" in r), None)
    header = ["K", *(f"batch {b}: s/step, peak" for b in batches), "MB per image",
              "K=1 / this", f"largest batch in {budget_gb:g} GB", "epoch min there"]  # fmt: skip
    table = []
    for r in rows:
        runs = {int(b): run for b, run in r["runs"].items()}  # JSON keys are strings
        cells = [str(r["k"]), *(cell(runs[b]) for b in batches)]
        if "mb_per_image" in r:
            ratio = f"{base['mb_per_image'] / r['mb_per_image']:.2f}x" if base else "-"
            cells += [
                f"{r['mb_per_image']:.1f}",
                ratio,
                str(r["budget_batch"]),
                f"{r['budget_epoch_min']:.0f}",
            ]
        else:
            cells += ["-"] * 4
        table.append(cells)
    return header, table


def markdown(header: list[str], table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in table])


def measured_on(record: dict[str, Any]) -> str:
    """Where and how the table was measured, in one sentence."""
    m, s = record["measured"], record["setup"]
    return (
        f"Measured {m['date']} at commit {m['commit']} on {m['machine']} ({m['device']}, "
        f"{m['threads']} thread(s)), `{m['command']}`, {m['wall_s'] / 60:.0f} min: one search "
        f"step (a first-order architect step and an SGD weight step) of the CIFAR-10 "
        f"supernet, C={s['C']}, {s['layers']} cells, 32x32, median of {s['steps']} steps after "
        f"{s['warmup']}, each (K, batch) in a fresh process; peak = {m['peak']}."
    )


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers by K: memory per image and the largest batch within the budget."""
    return {
        str(r["k"]): {key: r[key] for key in ("mb_per_image", "budget_batch") if key in r}
        for r in record["rows"]
    }


def load(path: Path) -> tuple[tuple[list[str], list[list[str]]], str, dict[str, Any]]:
    """``make bench-memory``'s file as the report shows it: the table, where it was measured,
    its numbers; UserError naming the file when it is not the benchmark's."""
    try:
        record = json.loads(path.read_text())
        setup = record["setup"]
        table = grid(record["rows"], setup["batches"], setup["budget_gb"])
        return table, measured_on(record), summary(record)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path} is damaged, not benchmarks/memory_k.py's table ({error!r}): measure it "
            "again (make bench-memory) or delete it"
        ) from None


def readme_block(path: Path) -> str:
    """The README's memory table, from ``path`` only."""
    (header, table), measured, _ = load(path)
    return "\n".join([BEGIN, markdown(header, table), "", measured, END])


def main(argv: list[str]) -> int:
    if argv != ["readme"]:
        print("usage: python -m reporting.memory_k readme", file=sys.stderr)
        return 2
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise UserError(f"{README} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    block = readme_block(README.parent / MEMORY_K_FILE)
    write_text(README, head + block + rest.split(END, 1)[1])
    print(f"rewrote the memory table in {README.name} from {MEMORY_K_FILE}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as error:
        print(f"memory_k: {error}", file=sys.stderr)
        sys.exit(1)
