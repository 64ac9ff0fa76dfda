"""The MLflow edge of the pipeline: every stage run is an MLflow run.

The library's loops report through ``pcdarts.tracking.Tracker``; this module is the only
place that imports MLflow. ``stage_run`` opens a run holding the stage's resolved config,
seed, git commit and upstream lineage, yields an ``MlflowTracker``, and ends the run
FINISHED, or FAILED when the stage raises. Tracking is an edge concern: a store that cannot
be reached fails fast at start, before any compute; a backend error mid-run warns once,
tracking stops and training goes on (the metrics are also in the stage's DVC outputs).

Where runs go: ``MLFLOW_TRACKING_URI`` if set, else the config's ``tracking_uri``, else a
SQLite store at ``<repo>/mlflow.db`` with artifacts in ``<repo>/mlruns`` (both git-ignored),
also when DVC runs the stage in a temporary workspace under ``.dvc/tmp/exps/``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from pcdarts.errors import UserError
from pipeline.io import write_json
from pipeline.registry import Registration, register_model_version

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACT_DIR = "mlruns"  # beside a local SQLite store, so artifacts never land in the cwd
DVC_EXPS_DIR = (".dvc", "tmp", "exps")  # where `dvc exp run --temp` and queued runs work
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit on params in one call
PACKAGES = ("torch", "torchvision", "numpy", "mlflow", "dvc")


class TrackingUnavailableError(UserError, RuntimeError):
    """The tracking store cannot be reached or written at start."""


def main_repo_root(repo_root: Path) -> Path:
    """``repo_root``, or the repository whose DVC temporary workspace it is."""
    parts = repo_root.resolve().parts
    for i in range(len(parts) - len(DVC_EXPS_DIR) + 1):
        if parts[i : i + len(DVC_EXPS_DIR)] == DVC_EXPS_DIR:
            return Path(*parts[:i])
    return Path(*parts)


def default_tracking_uri(repo_root: Path) -> str:
    """The SQLite store of the main repository: ``sqlite:///<repo>/mlflow.db``."""
    return f"sqlite:///{(main_repo_root(repo_root) / DB_NAME).as_posix()}"


def resolve_tracking_uri(repo_root: Path, configured: str = "") -> str:
    """``MLFLOW_TRACKING_URI``, else a non-empty configured URI, else the default store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri(repo_root)


def _local_store_dir(uri: str) -> Path | None:
    """The folder a ``sqlite:`` or ``file:`` store writes into (the file's parent), else None."""
    scheme, _, rest = uri.partition(":")
    if scheme == "file":
        return Path(urllib.request.url2pathname(rest.removeprefix("//")))
    if scheme == "sqlite":
        path = rest.removeprefix("///").split("?")[0]  # sqlite:////abs/x.db -> /abs/x.db
        return Path(path).parent if path and path != ":memory:" else None
    return None


def check_tracking_server(uri: str, timeout_s: float = 5) -> None:
    """Raise ``TrackingUnavailableError`` if the store at ``uri`` cannot be used.

    http(s): GET ``<uri>/health`` must answer within ``timeout_s``, and the API must not
    refuse the server's name (MLflow's Host header check). Local stores: the
    nearest existing folder on the store's path must be writable. Other schemes pass.
    """
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                pass
        except urllib.error.HTTPError as error:
            if error.code < 500:  # something answers; MLflow itself reports auth or path errors
                return
            reason = f"HTTP {error.code}"
        except OSError as error:  # URLError, refused, timeout
            reason = str(getattr(error, "reason", error))
        else:
            _check_host_allowed(uri, timeout_s)
            return
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} is unreachable: GET {url} failed ({reason}) within"
            f" {timeout_s:g} s. Start the server, or unset MLFLOW_TRACKING_URI (and the config's"
            " tracking_uri) to log to the repository's SQLite store."
        )
    folder = _local_store_dir(uri)
    if folder is None:
        return
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise TrackingUnavailableError(
            f"MLflow tracking store {uri} is not writable: {existing} is read-only."
            " Fix its permissions or set MLFLOW_TRACKING_URI to another store."
        )


# What MLflow's server answers, with 403, to a Host header it does not allow (its protection
# against DNS rebinding); /health is exempt, so the check asks its API too.
REFUSED_HOST = "Invalid Host header"
API_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"  # any read of the API


def _check_host_allowed(uri: str, timeout_s: float) -> None:
    """``TrackingUnavailableError`` when the server at ``uri`` refuses the name it is reached
    by; any other answer passes (MLflow itself reports auth or path errors)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + API_PROBE, timeout=timeout_s):
            return
    except urllib.error.HTTPError as error:
        refused = error.code == HTTPStatus.FORBIDDEN
        if not refused or REFUSED_HOST not in error.read().decode(errors="replace"):
            return
    except OSError:
        return
    host = urllib.parse.urlsplit(uri).hostname
    raise TrackingUnavailableError(
        f"MLflow tracking server {uri} refuses the name {host!r} (HTTP 403, {REFUSED_HOST}):"
        f" start it with --allowed-hosts {host} (scripts/tracking_server.py, or mlflow server"
        f" --allowed-hosts '{host}:*'), or reach it by its IP address."
    )


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}``; values as JSON text cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        flat[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return flat


class MlflowTracker:
    """A ``pcdarts.tracking.Tracker`` on the active MLflow run; stops at the first backend error.

    Records (``log_record``) are kept in memory and written as one JSON list per name,
    ``records/<name>.json``, on ``flush()`` and when the run ends.
    """

    def __init__(self, run_id: str, experiment_id: str) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.ok = True  # False once the backend failed: every later call is a no-op
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._curves: set[str] = set()  # metrics logged per step: their last value is final

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not self.ok:
            return
        try:
            fn(*args, **kwargs)
        except Exception as error:  # any backend error: tracking is not worth a lost run
            self.ok = False
            warnings.warn(
                f"MLflow tracking disabled for run {self.run_id}: {what} failed ({error!r})."
                " Training goes on; its metrics are still in the stage's DVC outputs.",
                RuntimeWarning,
                stacklevel=3,
            )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars of one step (the epoch)."""
        values = {name: float(value) for name, value in metrics.items()}
        self._curves.update(values)
        self._call("log_metrics", mlflow.log_metrics, values, step=step)

    def log_record(self, name: str, record: Mapping[str, Any], step: int) -> None:
        """Keep one JSON-serialisable record; written by ``flush()``."""
        self._records.setdefault(name, []).append({"step": step, **record})

    def flush(self) -> None:
        """Write every record list so far as ``records/<name>.json`` (overwriting)."""
        for name, rows in self._records.items():
            self.log_dict(rows, f"records/{name.replace('/', '_')}.json")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nested params, flattened with dots and logged in batches MLflow accepts."""
        items = list(flatten_params(params).items())
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._call("log_params", mlflow.log_params, dict(items[i : i + MAX_PARAMS_PER_BATCH]))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Final metrics of the run (no step): ``test/top1_err``, ``model/params_m``, ...

        A metric already logged per epoch is skipped: its last point is the final value,
        and a second point at step 0 would fold the curve back.
        """
        values = {k: float(v) for k, v in metrics.items() if k not in self._curves}
        self._call("log_summary", mlflow.log_metrics, values)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's content, under ``artifact_path``."""
        log_fn = mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact
        self._call(f"log_artifact({path})", log_fn, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """A JSON (or YAML, by suffix) artifact ``name`` from a serialisable object."""
        self._call(f"log_dict({name})", mlflow.log_dict, obj, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call("set_tags", mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_model(self, model: Any, name: str, input_example: np.ndarray) -> str | None:
        """A PyTorch model with its signature; its LoggedModel id, or None (a failure warns
        and the run goes on)."""
        if not self.ok:
            return None
        import mlflow.pytorch  # imports torch: only where a model is logged

        requirements = [f"{p}=={_version(p)}" for p in ("torch", "torchvision", "numpy")]
        try:  # explicit requirements skip MLflow's slow inference of them in a subprocess
            info = mlflow.pytorch.log_model(  # pickled: pt2 (torch.export) fixes the batch size
                model,
                name=name,
                input_example=input_example,
                pip_requirements=requirements,
                serialization_format="pickle",
            )
        except Exception as error:  # a model that MLflow cannot save is no reason to fail
            msg = f"MLflow could not log model {name!r}: {error!r}"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return None
        return str(info.model_id)

    def register_model(self, model_id: str | None, registration: Registration) -> str | None:
        """Register the logged model ``model_id`` in the Model Registry (pipeline/registry.py);
        the version, or None when there is nothing to register or the registry fails (warned)."""
        if not self.ok or model_id is None:
            return None
        client = mlflow.MlflowClient(mlflow.get_tracking_uri())
        try:
            version = register_model_version(client, model_id, self.run_id, registration)
        except Exception as error:  # the registry is an observer: never a reason to fail
            msg = f"MLflow could not register model {registration.name!r}: {error!r}"
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return None
        return str(version.version)

    def close(self, status: str) -> None:
        """Flush the records and end the run with ``status`` (FINISHED, FAILED, KILLED)."""
        self.flush()
        if self.ok:
            self._call("end_run", mlflow.end_run, status)
        if mlflow.active_run() is not None:  # the backend failed: still leave no run open here
            try:
                mlflow.end_run(status)
            except Exception:  # already warned once
                log.debug("end_run failed after tracking was disabled", exc_info=True)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(repo_root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo_root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _git_tags(repo_root: Path) -> dict[str, str]:
    # dvc.lock is rewritten after each stage of a repro: not a change of code or config.
    status = _git(repo_root, "status", "--porcelain", "--", ".", ":(exclude,glob)**/dvc.lock")
    return {
        "git_commit": _git(repo_root, "rev-parse", "HEAD") or "unknown",
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def _upstream_run_ids(run_files: Sequence[Path]) -> list[str]:
    ids = []
    for path in run_files:
        try:
            ids.append(str(json.loads(Path(path).read_text())["run_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("no upstream run id in %s; lineage tag left incomplete", path)
    return ids


def _experiment_id(name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside a local store) if new."""
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        folder = _local_store_dir(uri) if uri.startswith("sqlite:") else None
        location = (folder.absolute() / ARTIFACT_DIR).as_uri() if folder else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # a parallel stage created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


@contextmanager
def stage_run(
    stage: str,
    *,
    params: Mapping[str, Any],
    profile: str,
    seed: int,
    repo_root: Path,
    tracking_uri: str = "",
    experiment: str = "pcdarts",
    dataset: str | None = None,
    dataset_size: int | None = None,
    upstream_run_files: Sequence[Path] = (),
    run_file: Path | None = None,
    dvc_stage: str | None = None,
) -> Iterator[MlflowTracker]:
    """One MLflow run around a stage's work, named ``<stage>`` or ``<stage>:<dataset>``.

    Logs ``params`` (flattened) with profile, seed, dataset and its size; tags the stage,
    DVC stage, git commit and dirtiness, profile and ``upstream_run_ids`` (read from the
    upstream stages' run files); logs ``environment.json`` and system metrics (if psutil
    is installed). On success writes ``run_file`` (run_id, experiment_id, tracking_uri,
    tracking_ok) atomically; an exception ends the run FAILED and propagates.
    """
    uri = resolve_tracking_uri(repo_root, tracking_uri)
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment_id(experiment, uri)
    system_metrics = importlib.util.find_spec("psutil") is not None
    if not system_metrics:
        log.debug("psutil is not installed: no MLflow system metrics")
    tags = {
        "stage": stage,
        "dvc_stage": dvc_stage or stage,
        "profile": profile,
        "upstream_run_ids": ",".join(_upstream_run_ids(upstream_run_files)),
        **_git_tags(repo_root),
    }
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage if dataset is None else f"{stage}:{dataset}",
        tags=tags,
        log_system_metrics=system_metrics,
    )
    tracker = MlflowTracker(run.info.run_id, experiment_id)
    extra = {"profile": profile, "seed": seed, "dataset": dataset, "dataset_size": dataset_size}
    tracker.log_params({**params, **{k: v for k, v in extra.items() if v is not None}})
    packages = {name: _version(name) for name in PACKAGES}
    environment = {"python": platform.python_version(), "platform": platform.platform()}
    tracker.log_dict({**environment, "packages": packages}, "environment.json")
    try:
        yield tracker
    except BaseException as error:
        tracker.close("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.close("FINISHED")
    if run_file is not None:
        info = {"run_id": tracker.run_id, "experiment_id": experiment_id, "tracking_uri": uri}
        write_json(Path(run_file), {**info, "tracking_ok": tracker.ok})
