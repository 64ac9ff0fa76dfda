"""What every stage entry point shares: friendly errors, its MLflow run, augmentation.

A stage is: load and validate params, seed, build through library factories, call one
library entry point, write its declared outputs, log to MLflow. DVC reads the same
declarations from dvc.yaml; tests/test_dvc_declarations.py checks they agree.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcdarts.distributed import is_distributed, is_main
from pcdarts.errors import UserError
from pipeline.config import REPO_ROOT, Params
from pipeline.io import to_jsonable
from pipeline.kernels import record
from pipeline.tracking import MlflowTracker, stage_run

DEBUG_ENV = "PCDARTS_DEBUG"  # set to 1: a UserError shows its traceback too


class PeerLostError(UserError, RuntimeError):
    """A process of another node went away mid-stage (killed, crashed, network lost)."""


class UsageError(UserError):
    """A stage's command line does not fit it; :func:`run_stage` adds the usage line."""


def run_stage(main: Callable[..., None], *args: str) -> None:
    """Run a stage's ``main(*args)``; a :class:`UserError` (bad params, data, genotype,
    missing upstream output, unreachable tracking store, arguments that do not fit ``main``,
    a failed rendezvous, a process of another node lost mid-stage)
    becomes one line on stderr and exit status 1, its traceback only with
    ``PCDARTS_DEBUG=1``. Other errors are bugs and keep their traceback."""
    try:
        try:
            inspect.signature(main).bind(*args)
        except TypeError as error:  # a missing or an extra argument
            raise UsageError(str(error)) from None
        try:
            main(*args)
        except Exception as error:  # a collective whose peer went away: one line too
            if (lost := lost_peer(error)) is None:
                raise
            raise lost from error
    except UserError as error:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message = f"{error}; {usage(main)}" if isinstance(error, UsageError) else str(error)
        print(f"{' '.join([_module(main), *args])}: {message}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)


def lost_peer(error: BaseException) -> PeerLostError | None:
    """A PeerLostError for a collective that failed because another process went away
    (killed, crashed, or its machine unreachable), else None. Names the address of the
    process lost (gloo's message holds it) and how to resume."""
    if not isinstance(error, RuntimeError) or not is_distributed():
        return None
    text = str(error)
    sign = next((s for s in PEER_GONE if s in text), None)
    if sign is None:
        return None
    peer = re.search(r"\[([0-9A-Fa-f.:]+)\]:\d+", text.split(sign, 1)[1])
    who = f"the node at {peer.group(1)}" if peer else "another node"
    return PeerLostError(f"lost {who} mid-stage ({sign}): every node stops. {RESUME_HINT}")


RESUME_HINT = (
    "To resume from the last epoch checkpointed in .checkpoints/, start the same command again"
    " on every node (dvc repro <stage> on node 0); with dist.max_restarts > 0 torchrun does so"
    " by itself"
)


# What gloo says when the process at the other end of a collective is gone.
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def usage(main: Callable[..., None]) -> str:
    """``usage: python -m stages.search <dataset> <seed> [<k>] (e.g. python -m stages.search
    cifar10 0)``: ``main``'s parameters, and its module docstring's first example."""
    words = ["usage: python -m", _module(main)]
    for parameter in inspect.signature(main).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            words.append(f"[<{parameter.name}> ...]")
        elif parameter.default is inspect.Parameter.empty:
            words.append(f"<{parameter.name}>")
        else:
            words.append(f"[<{parameter.name}>]")
    doc = sys.modules[main.__module__].__doc__ or ""
    command = f"python -m {_module(main)} "  # an example with arguments
    examples = [line.split("#")[0].strip() for line in doc.splitlines()]
    example = next((line for line in examples if line.startswith(command)), None)
    return " ".join(words) + (f" (e.g. {example})" if example else "")


def int_argument(text: str, name: str) -> int:
    """The stage argument ``<name>`` as an integer; UsageError naming it otherwise."""
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"<{name}> must be an integer, not {text!r}") from None


def _module(main: Callable[..., None]) -> str:
    """``main``'s module as ``python -m`` names it (``stages.search``, also as __main__)."""
    if main.__module__ == "__main__":  # python -m stages.<name>
        return f"stages.{Path(sys.argv[0]).stem}"
    return main.__module__


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
