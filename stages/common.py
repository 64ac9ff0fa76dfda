"""What every stage shares: declared outputs written atomically, resumable checkpoints.

A stage is: load and validate params, seed, build through library factories, call one
library entry point, write its declared outputs, log to MLflow. DVC reads the same
declarations from dvc.yaml; tests/test_dvc_declarations.py checks they agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, TypeVar

import torch

from pcdarts.distributed import init_from_env, is_distributed, is_main, world_size
from pcdarts.errors import MissingInputError, UserError
from pcdarts.runtime import resolve_device
from stages.config import REPO_ROOT, Params
from stages.tracking import (
    MlflowTracker,
    check_tracking_server,
    resolve_tracking_uri,
    stage_run,
)

T = TypeVar("T")
CHECKPOINT_DIR = REPO_ROOT / ".checkpoints"  # in-progress states; git-ignored, not DVC outputs
DEBUG_ENV = "PCDARTS_DEBUG"  # set to 1: a UserError shows its traceback too
CORRUPT_SUFFIX = ".corrupt"  # an unreadable checkpoint is renamed <name>.corrupt-<n>


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


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; it replaces ``path`` only if the block succeeds.

    ``path`` is always the old or the new file, never half of one, also when the process is
    killed (SIGKILL, power aside: no fsync). A temporary left by a killed writer of the same
    path is removed here (only one process, rank 0, ever writes a path).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary name only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    if not is_main():  # under torchrun only rank 0 writes
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def upstream(path: Path, produced_by: str) -> Path:
    """``path``, after checking the upstream stage ``produced_by`` wrote it."""
    if not path.is_file():
        raise MissingInputError(
            f"{path} is missing: it is written by the {produced_by!r} stage "
            f"(dvc repro {produced_by})"
        )
    return path


def read_json(path: Path, produced_by: str, parse: Callable[[str], T] = json.loads) -> T:
    """An upstream stage's JSON output through ``parse``; MissingInputError, or UserError
    naming the file when it is not what ``parse`` expects (damaged, hand-edited)."""
    try:
        return parse(upstream(path, produced_by).read_text())
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:  # JSONDecodeError too
        raise UserError(
            f"{path} is not a valid output of {produced_by} ({error!r}): rerun it "
            f"(dvc repro -f {produced_by})"
        ) from None


def save_torch(path: Path, obj: Any) -> None:
    if not is_main():
        return
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def config_hash(config: Any) -> str:
    """A short, stable hash of a config tree (dataclasses or dicts)."""
    text = json.dumps(to_jsonable(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Resumable:
    """In-progress checkpoints of a long stage, keyed by its resolved config.

    DVC deletes a stage's outputs before running it, so progress is kept outside them,
    in ``.checkpoints/<name>/<config hash>.pt``: an interrupted stage rerun with the same
    config resumes from its last epoch; a changed config starts afresh.
    """

    def __init__(self, name: str, config: Any) -> None:
        self.path = CHECKPOINT_DIR / name / f"{config_hash(config)}.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None: nothing saved, or a file that cannot be read (truncated,
        not a checkpoint), which is renamed ``<name>.corrupt-<n>`` with a warning."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}, not a checkpoint dict")
        except Exception as error:  # torch.load raises many types for a damaged file
            aside = self._set_aside() if is_main() else self.path
            warnings.warn(
                f"checkpoint {self.path} cannot be loaded ({str(error)[:200]}); moved to "
                f"{aside.name}, starting afresh",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        return state

    def _set_aside(self) -> Path:
        n = 1
        while (aside := self.path.with_name(f"{self.path.name}{CORRUPT_SUFFIX}-{n}")).exists():
            n += 1
        self.path.rename(aside)
        return aside

    def saver(self) -> Callable[[dict[str, Any]], None]:
        return lambda state: save_torch(self.path, state)

    def done(self) -> None:
        if is_main():
            self.path.unlink(missing_ok=True)


class _Silent:
    """The tracker of ranks other than 0: only rank 0 logs to MLflow."""

    ok = False
    run_id = ""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def start_processes(p: Params, module: str, argv: list[str]) -> torch.device:
    """This stage's device, after starting its processes.

    With ``dist.nproc_per_node`` or ``dist.nnodes`` above 1 and not yet under torchrun, runs
    ``torch.distributed.run`` on this same stage and exits with its status (so `dvc repro`
    launches it); under torchrun, joins the process group. First checks that the tracking
    store answers (TrackingUnavailableError otherwise), so a dead server costs no compute.
    Per-process batch = global batch / world size (:func:`per_process_batch`).
    """
    if "LOCAL_RANK" not in os.environ:  # before any data or compute; torchrun's children skip it
        check_tracking_server(resolve_tracking_uri(REPO_ROOT, p.tracking.tracking_uri))
    d = p.dist
    if (d.nproc_per_node > 1 or d.nnodes > 1) and "LOCAL_RANK" not in os.environ:
        command = [sys.executable, "-m", "torch.distributed.run"]
        command += [f"--nproc_per_node={d.nproc_per_node}", f"--nnodes={d.nnodes}"]
        if d.nnodes > 1:
            if not d.rdzv_endpoint:
                raise ValueError("dist.nnodes > 1 needs dist.rdzv_endpoint (host:port)")
            command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={d.rdzv_endpoint}"]
            command += [f"--rdzv_id={d.rdzv_id}"]
        else:
            command += ["--standalone"]
        sys.exit(subprocess.call([*command, "-m", module, *argv]))
    device = init_from_env(p.device)
    configure_threads()
    return device if device is not None else resolve_device(p.device)


def per_process_batch(global_batch: int, key: str) -> int:
    world = world_size()
    if global_batch % world:
        raise ValueError(f"{key}={global_batch} is not divisible by the {world} processes")
    return global_batch // world


def finish_processes() -> None:
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


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
        params=to_jsonable(params),
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


def augment_kwargs(p: Params) -> dict[str, Any]:
    """``pcdarts.data.datasets.image_dataset`` keywords for the configured augmentation."""
    a = p.data.augment
    return {
        "hflip": a.hflip,
        "crop_padding": a.cifar_crop_padding,
        "crop_scale_min": a.imagenet_crop_scale_min,
    }


def configure_threads() -> None:
    """Use the cores this process may run on (DVC may start stages under a CPU mask),
    shared among the processes torchrun started on this machine."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, cores // local))
