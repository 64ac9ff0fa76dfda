"""What every stage entry point shares: friendly errors, its MLflow run, augmentation.

A stage is: load and validate params, seed, build through library factories, call one
library entry point, write its declared outputs, log to MLflow. DVC reads the same
declarations from dvc.yaml; tests/test_dvc_declarations.py checks they agree.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcdarts.distributed import is_main
from pcdarts.errors import UserError
from pipeline.config import REPO_ROOT, Params
from pipeline.io import to_jsonable
from pipeline.kernels import record
from pipeline.tracking import MlflowTracker, stage_run

DEBUG_ENV = "PCDARTS_DEBUG"  # set to 1: a UserError shows its traceback too


def run_stage(main: Callable[..., None], *args: str) -> None:
    """Run a stage's ``main(*args)``; a :class:`UserError` (bad params, data, genotype,
    missing upstream output, unreachable tracking store) becomes one line on stderr and
    exit status 1, its traceback only with ``PCDARTS_DEBUG=1``. Other errors are bugs and
    keep their traceback."""
    try:
        main(*args)
    except UserError as error:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        module = main.__module__
        if module == "__main__":  # python -m stages.<name>
            module = f"stages.{Path(sys.argv[0]).stem}"
        print(f"{' '.join([module, *args])}: {error}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)


class _Silent:
    """The tracker of ranks other than 0: only rank 0 logs to MLflow."""

    ok = False
    run_id = ""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def tracked(
    p: Params,
    dvc_stage: str,
    *,
    params: Any,
    run_file: Path,
    dataset: str | None = None,
    dataset_size: int | None = None,
    upstream_run_files: list[Path] | None = None,
    seed: int | None = None,
) -> contextlib.AbstractContextManager[MlflowTracker]:
    """The stage's MLflow run, with the study-wide settings taken from ``p`` (rank 0 only).

    ``upstream_run_files`` are read for the lineage tag only; they are not DVC
    dependencies (a rerun upstream that changes no result must not rerun this stage).
    """
    if not is_main():
        return contextlib.nullcontext(_Silent())  # type: ignore[arg-type]
    return stage_run(
        dvc_stage.split("@")[0],
        params={**to_jsonable(params), "runtime": runtime_record(p)},
        profile=p.profile,
        seed=p.seed if seed is None else seed,
        repo_root=REPO_ROOT,
        tracking_uri=p.tracking.tracking_uri,
        experiment=p.tracking.experiment,
        dataset=dataset,
        dataset_size=dataset_size,
        upstream_run_files=[REPO_ROOT / f for f in upstream_run_files or []],
        run_file=REPO_ROOT / run_file,
        dvc_stage=dvc_stage,
    )


def runtime_record(p: Params) -> dict[str, Any]:
    """The CPU kernels this process runs (pipeline/kernels.py), for the stage's metrics and
    its MLflow params: `make check-repro` reads it from the metrics."""
    return record(p.runtime.cpu_kernels)


def augment_kwargs(p: Params) -> dict[str, Any]:
    """``pcdarts.data.datasets.image_dataset`` keywords for the configured augmentation."""
    a = p.data.augment
    return {
        "hflip": a.hflip,
        "crop_padding": a.cifar_crop_padding,
        "crop_scale_min": a.imagenet_crop_scale_min,
    }
