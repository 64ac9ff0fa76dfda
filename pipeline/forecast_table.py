"""The dry run's result: one row per stage of the study and their sum, as JSON and as a table.

A row holds what ran (device, world size, per-process batch, network sizes), what was
measured (median seconds per step of each loop phase, peak memory; or how it was
extrapolated, or why it does not fit) and the forecast of the full stage: steps per epoch
from the data's size and the global batch, epochs from the config, wall hours and
device-days on this hardware; on stand-in data, also at the real dataset's image counts.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Params

MB_PER_GB = 1e3
DAYS_PER_HOUR = 1 / 24
MAIN_PHASE = ("search", "train")  # the phase whose steps make an epoch
# peak memory on a CPU: the process's resident-set high-water; on CUDA: max allocated
MEMORY_KIND = {"cpu": "resident-set high-water", "cuda": "CUDA max allocated"}


def _steps_per_epoch(row: dict[str, Any]) -> int | None:
    f = row.get("forecast")
    if not f:
        return None
    epochs = row.get("epochs", {})
    for phase in MAIN_PHASE:
        if phase in f["steps"]:
            trained = epochs.get("epochs", 1) - (
                epochs.get("warmup_epochs", 0) if phase == "search" else 0
            )
            return f["steps"][phase] // max(trained, 1)
    return None


def study_summary(
    p: Params,
    rows: dict[str, dict[str, Any]],
    failed: dict[str, str],
    stages: list[str],
    not_dry_run: list[str],
    no_loop: str,
) -> dict[str, Any]:
    """Every stage's row in the study's order, and the sum: stages run one after another
    (as ``dvc repro`` runs them), so wall hours add up, and so do device-days."""
    order = _study_order(stages + not_dry_run)
    out: list[dict[str, Any]] = []
    for stage in order:
        if stage in rows:
            row = dict(rows[stage])
            row["steps_per_epoch"] = _steps_per_epoch(row)
            out.append(row)
        elif stage in failed:
            out.append({"stage": stage, "status": failed[stage]})
        elif stage in not_dry_run:
            out.append({"stage": stage, "status": no_loop})
    forecasts = [r["forecast"] for r in out if r.get("forecast")]
    real = [r.get("forecast_real_size") or r["forecast"] for r in out if r.get("forecast")]
    missing = [r["stage"] for r in out if not r.get("forecast") and r["stage"] not in not_dry_run]
    device = next((r["device"] for r in out if "device" in r), "")
    return {
        "profile": p.profile,
        "data_source": p.data.source,
        "device": device,
        "device_name": next((r["device_name"] for r in out if "device_name" in r), ""),
        "world": p.dist.nproc_per_node * p.dist.nnodes,
        "memory": MEMORY_KIND.get(device.split(":")[0], ""),
        "stages": out,
        "study": {
            "wall_hours": sum(f["wall_hours"] for f in forecasts),
            "device_days": sum(f["device_days"] for f in forecasts),
            "wall_hours_real_size": sum(f["wall_hours"] for f in real),
            "device_days_real_size": sum(f["device_days"] for f in real),
            "incomplete": missing,  # stages without a forecast: the sums leave them out
        },
    }


def _study_order(stages: list[str]) -> list[str]:
    """prepare, the searches, the K ablation, derive, the trainings, SSD, report."""
    families = ["prepare", "search@cifar10", "search@imagenet", "search_k", "derive",
                "train_cifar10", "train_imagenet", "transfer_ssd", "report"]  # fmt: skip

    def key(stage: str) -> tuple[int, str]:
        for i, family in enumerate(families):
            if stage == family or stage.startswith((f"{family}@", f"{family}-")):
                return i, stage
        return len(families), stage

    return sorted(dict.fromkeys(stages), key=key)


def _status(row: dict[str, Any]) -> str:
    if "measurement" not in row:
        return str(row.get("status", ""))
    m = row["measurement"]
    if "same_as" in row:
        return f"as {row['same_as']} (another seed)"
    if m["status"] == "extrapolated":
        batches = ", ".join(str(pt["batch"]) for pt in m["points"][-2:])
        return f"EXTRAPOLATED from batches {batches}"
    if m["status"] == "does not fit":
        return str(m["note"])
    return str(m["status"])


def _seconds(row: dict[str, Any]) -> str:
    seconds = row.get("measurement", {}).get("seconds_per_step") or {}
    return " / ".join(f"{phase} {s:.3g}" for phase, s in seconds.items()) or "-"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table, the study's sum last, and what it assumed."""
    real = summary["data_source"] == "embedded"
    header = ["stage", "world x batch", "s/step (median)", "peak GB", "steps/epoch", "epochs",
              "wall h", "device-days"]  # fmt: skip
    header += [*(["wall h, real sizes"] if real else []), "how"]
    lines = [
        f"Dry run of profile {summary['profile']!r} ({summary['data_source']} data) on "
        f"{summary['device']}: {summary['device_name']}; peak memory = {summary['memory']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in summary["stages"]:
        f = row.get("forecast") or {}
        m = row.get("measurement") or {}
        peak = m.get("peak_memory_mb")
        epochs = row.get("epochs", {}).get("epochs")
        batch = row.get("per_process_batch")
        cells = [
            row["stage"],
            f"{row['world']} x {batch}" if batch else "-",
            _seconds(row),
            _number(None if peak is None else peak / MB_PER_GB),
            _number(row.get("steps_per_epoch"), 6),
            _number(epochs, 6),
            _number(f.get("wall_hours")),
            _number(f.get("device_days")),
        ]
        if real:
            cells.append(_number((row.get("forecast_real_size") or {}).get("wall_hours")))
        cells.append(_status(row))
        lines.append("| " + " | ".join(cells) + " |")
    s = summary["study"]
    total = ["**study**", "", "", "", "", "", f"**{s['wall_hours']:.3g}**",
             f"**{s['device_days']:.3g}**"]  # fmt: skip
    total += [f"**{s['wall_hours_real_size']:.3g}**"] if real else []
    lines.append("| " + " | ".join([*total, "sum of the stages above"]) + " |")
    scaling = {r["scaling"] for r in summary["stages"] if "scaling" in r}
    lines.append("")
    lines.append(f"Scaling assumed: {'; '.join(sorted(scaling))}.")
    if s["incomplete"]:
        lines.append(f"Not in the sums (no forecast): {', '.join(s['incomplete'])}.")
    if real:
        lines.append(
            "Wall h, real sizes: the same steps with the real datasets' image counts "
            "(CIFAR-10 50,000/10,000, ILSVRC2012 1,281,167/50,000, COCO 2017 118,287/5,000)."
        )
    return "\n".join(lines)
