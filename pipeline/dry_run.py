"""The dry run (``make dry-run``): every stage of the study through its own code path for a
few steps of each loop, at the config's sizes, on its data and device; then what the full
study costs on this hardware.

    python -m pipeline.dry_run                                  # the workspace's params.yaml
    python -m pipeline.dry_run profile=paper data.source=embedded device=cpu
    make dry-run ARGS="profile=paper data.cifar10_root=/data/cifar10 ..."

Options (``ARGS`` takes them too): ``--steps N`` and ``--warmup-steps N`` per loop phase,
``--memory-budget-gb X`` (default: 80 % of what the device has free when a stage starts),
``--mlflow`` (one MLflow run, tagged ``dry_run``), ``--workspace DIR`` (default ``.dry-run``).

The scratch workspace mirrors the repository's layout where the stages read and write:
``params.yaml`` (the overrides composed, or a copy of the workspace's), ``data/prepared/``
(``prepare``'s checks, index files and embedded data), ``outputs/`` (the dry-run genotypes
and ImageNet network the downstream stages read) and ``transfer_ssd/`` (MMEngine's work
folder). The stages' set-up takes that folder as its root (``root=``) instead of the
repository's, so the repository's params.yaml, outputs/, dvc.lock, DVC cache, .checkpoints/
and MLflow store stay as they were. Each stage runs in a fresh process (its own memory peak;
the operating system's out-of-memory kill takes only it), with the CPU kernels its stage
would pin (pipeline/kernels.py). ``<workspace>/forecast.json`` holds the table printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcdarts.errors import UserError
from pipeline.compose import compose_params
from pipeline.config import PARAMS_FILE, REPO_ROOT, SEARCHED, Params, load_params, validate
from pipeline.io import atomic_path, write_json
from pipeline.kernels import can_pin, pinned_environment

WORKSPACE = REPO_ROOT / ".dry-run"
FORECAST = "forecast.json"
ROWS = "rows"
SCRATCH = ("params.yaml", "data", "outputs", "transfer_ssd", ROWS, FORECAST)  # what it clears
WARMUP_STEPS = 1  # per loop phase: untimed (allocator, kernel selection, worker start)
MEASURED_STEPS = 3  # per loop phase: timed; the median counts
BUDGET_FRACTION = 0.8  # of the device's free memory: headroom for the OS and other processes
DATA_ROOTS = ("cifar10_root", "imagenet_root", "coco_root")
NO_LOOP = "not dry-run: no training loop (seconds to minutes whatever the profile)"
GB = 1e9
MB = 1e6
HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class Job:
    """A stage measured in one worker process, and the stages that share its cost."""

    stage: str
    kind: str  # prepare, search, train, transfer
    args: tuple[str, ...] = ()
    same_as_this: tuple[str, ...] = ()  # other seeds: the same config, the same cost
    needs: tuple[str, ...] = field(default=(), compare=False)  # what it reads from others


def plan(p: Params) -> list[Job]:
    """The study's stages as dvc.yaml expands them, in an order that feeds each its inputs."""
    jobs = [Job("prepare", "prepare")]
    for dataset in ("cifar10", "imagenet"):
        others = tuple(f"search@{dataset}-{s}" for s in p.seeds if s != p.seed)
        jobs.append(Job(f"search@{dataset}-{p.seed}", "search", (dataset, str(p.seed)), others))
    for k in p.k_values:
        jobs.append(Job(f"search_k@{k}", "search", ("cifar10", str(p.seed), str(k))))
    for dataset in ("cifar10", "imagenet"):
        for cell in section_cells(p, dataset):
            jobs.append(Job(f"train_{dataset}@{cell}", "train", (dataset, cell)))
    jobs.append(Job("transfer_ssd", "transfer", needs=(f"train_imagenet@{SEARCHED}",)))
    return jobs


def section_cells(p: Params, dataset: str) -> list[str]:
    return list(getattr(p, f"train_{dataset}").cells)


NOT_DRY_RUN = ["derive@cifar10", "derive@imagenet", "report"]


# --------------------------------------------------------------------------- workspace


def prepare_workspace(workspace: Path, overrides: list[str]) -> Params:
    """Clear the workspace's previous run and write its params.yaml: the overrides composed,
    or the repository's params.yaml; relative data roots made absolute (the stages resolve
    them against the repository). ParamsError (one line, naming the key) when invalid."""
    workspace.mkdir(parents=True, exist_ok=True)
    for name in SCRATCH:
        path = workspace / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if overrides:
        raw = compose_params(overrides)
    else:
        load_params(PARAMS_FILE)  # validated, errors naming the file
        raw = yaml.safe_load(PARAMS_FILE.read_text())
    for key in DATA_ROOTS:
        raw["data"][key] = os.path.join(REPO_ROOT, raw["data"][key])  # absolute stays as is
    validate(raw, f"{workspace / 'params.yaml'}")
    with atomic_path(workspace / "params.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(workspace / "params.yaml")


def describe_device(device_type: str) -> str:
    """The machine, in words: the GPU's name, or the CPU's model, cores and memory."""
    if device_type == "cuda":
        import torch  # noqa: PLC0415 - the parent does not load torch otherwise

        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / GB:.0f} GB"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return f"{model}, {cores} of {os.cpu_count()} cores for this process, {memory:.0f} GB"


# --------------------------------------------------------------------------- the worker


def run_worker(args: argparse.Namespace) -> None:
    """One stage in this process: its row in ``<workspace>/rows/<stage>.json``."""
    from pcdarts.runtime import resolve_device  # noqa: PLC0415 - torch in workers only
    from pipeline.dry_run_stages import (  # noqa: PLC0415
        Budget,
        Context,
        dry_prepare,
        dry_search,
        dry_train,
        dry_transfer,
    )
    from pipeline.launch import configure_runtime  # noqa: PLC0415
    from pipeline.memory import (  # noqa: PLC0415
        available_memory_mb,
        cap_address_space,
        memory_meter,
    )

    workspace = Path(args.workspace)
    stage, kind, *rest = args.worker
    p = load_params(workspace / "params.yaml")
    device = resolve_device(p.device)
    configure_runtime(device)
    budget = (
        args.memory_budget_gb * GB / MB
        if args.memory_budget_gb is not None
        else BUDGET_FRACTION * available_memory_mb(device)
    )
    if device.type == "cpu":
        # past the budget (never past what the machine has): an out-of-memory error the dry
        # run reports, not the kernel's out-of-memory killer
        cap_address_space(min(budget, BUDGET_FRACTION * available_memory_mb(device)))
    ctx = Context(
        p, workspace, device, memory_meter(device), Budget(args.warmup_steps, args.steps, budget)
    )
    start = time.perf_counter()
    if kind == "prepare":
        row = dry_prepare(ctx)
    elif kind == "search":
        dataset, seed, *k = rest
        row = dry_search(ctx, dataset, int(seed), int(k[0]) if k else None)
    elif kind == "train":
        row = dry_train(ctx, *rest)
    else:
        row = dry_transfer(ctx)
    row.update(
        {
            "stage": stage,
            "device": str(device),
            "device_name": describe_device(device.type),
            "memory_budget_mb": budget,
            "dry_run_seconds": time.perf_counter() - start,
        }
    )
    write_json(workspace / ROWS / f"{stage}.json", row)


def _worker_main(args: argparse.Namespace) -> int:
    try:
        run_worker(args)
    except UserError as error:  # bad data, params, a missing upstream output: one line
        print(f"{args.worker[0]}: {error}".replace("\n", " "), file=sys.stderr)
        return 1
    except Exception:  # a bug: its traceback, then the parent reports the stage as failed
        traceback.print_exc()
        return 1
    return 0


# --------------------------------------------------------------------------- the parent


def launch(job: Job, args: argparse.Namespace, env: dict[str, str]) -> tuple[int, str]:
    """Run ``job`` in a fresh process, its output in ``rows/<stage>.log``; (exit status, its
    last line on stderr)."""
    command = [sys.executable, "-m", "pipeline.dry_run", "--workspace", str(args.workspace)]
    command += ["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
    if args.memory_budget_gb is not None:
        command += ["--memory-budget-gb", str(args.memory_budget_gb)]
    command += ["--worker", job.stage, job.kind, *job.args]
    log = Path(args.workspace) / ROWS / f"{job.stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.PIPE, text=True
        )
        out.write(result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode < 0:
        return result.returncode, f"killed by signal {-result.returncode} (out of memory?)"
    return result.returncode, lines[-1] if lines else ""


def run_dry_run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    workspace = Path(args.workspace).resolve()
    args.workspace = workspace
    p = prepare_workspace(workspace, args.overrides)
    env = pinned_environment(os.environ, p.runtime.cpu_kernels, can_pin()) or dict(os.environ)
    rows: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for job in plan(p):
        missing = [n for n in job.needs if n in failed]
        if missing:
            failed[job.stage] = f"not run: {', '.join(missing)} failed"
            continue
        print(f"dry run: {job.stage} ...", end=" ", flush=True)
        began = time.perf_counter()
        status, last = launch(job, args, env)
        print(f"{time.perf_counter() - began:.0f} s" + ("" if status == 0 else f": {last}"))
        row_file = workspace / ROWS / f"{job.stage}.json"
        if status != 0 or not row_file.is_file():
            failed[job.stage] = f"failed: {last}"
            if job.kind == "prepare":
                print(f"dry run stopped: prepare failed: {last}", file=sys.stderr)
                return 1
            continue
        rows[job.stage] = json.loads(row_file.read_text())
        for other in job.same_as_this:
            rows[other] = {**rows[job.stage], "stage": other, "same_as": job.stage}
    from pipeline.forecast_table import format_table, study_summary  # noqa: PLC0415

    stages = [j.stage for j in plan(p)] + [s for j in plan(p) for s in j.same_as_this]
    summary = study_summary(p, rows, failed, stages, NOT_DRY_RUN, NO_LOOP)
    summary["measured_on"] = _provenance(args, time.perf_counter() - start)
    write_json(workspace / FORECAST, summary)
    print(format_table(summary))
    took = summary["measured_on"]["wall_seconds"]
    print(f"written {workspace / FORECAST} (the dry run took {took:.0f} s)")
    if args.mlflow:
        _log_to_mlflow(p, workspace, summary)
    return 1 if failed else 0


def _provenance(args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "command": " ".join(["python -m pipeline.dry_run", *args.overrides]),
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "wall_seconds": seconds,
    }


def _log_to_mlflow(p: Params, workspace: Path, summary: dict[str, Any]) -> None:
    from pipeline.tracking import stage_run  # noqa: PLC0415 - MLflow only when asked

    with stage_run(
        "dry-run",
        params={"overrides": summary["measured_on"]["command"]},
        profile=p.profile,
        seed=p.seed,
        repo_root=REPO_ROOT,
        tracking_uri=p.tracking.tracking_uri,
        experiment=p.tracking.experiment,
        dvc_stage="dry-run",
    ) as tracker:
        tracker.set_tags({"dry_run": "true"})
        metrics = {
            f"forecast/{row['stage'].replace('@', '_')}/wall_hours": row["forecast"]["wall_hours"]
            for row in summary["stages"]
            if row.get("forecast")
        }
        tracker.log_summary(
            {**metrics, "forecast/study/wall_hours": summary["study"]["wall_hours"]}
        )
        tracker.log_artifact(workspace / FORECAST)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("overrides", nargs="*", help="conf/ overrides: profile=paper ...")
    parser.add_argument("--steps", type=int, default=MEASURED_STEPS)
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS)
    parser.add_argument("--memory-budget-gb", type=float, default=None)
    parser.add_argument("--mlflow", action="store_true", help="one MLflow run, tagged dry_run")
    parser.add_argument("--workspace", type=Path, default=WORKSPACE)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)
    if args.steps < 1 or args.warmup_steps < 0:
        parser.error("--steps must be >= 1 and --warmup-steps >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        return _worker_main(args)
    try:
        return run_dry_run(args)
    except UserError as error:
        print(f"dry run: {error}".replace("\n", " "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
