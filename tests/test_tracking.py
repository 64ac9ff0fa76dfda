"""pipeline/tracking.py: a stage run as an MLflow run, on a temporary SQLite store."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.registry import cell_alias, registration
from pipeline.tracking import (
    MAX_PARAM_CHARS,
    TrackingUnavailableError,
    check_tracking_server,
    default_tracking_uri,
    resolve_tracking_uri,
    stage_run,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module: creating its tables takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    while mlflow.active_run() is not None:  # a failing test leaves no run open for the next
        mlflow.end_run("KILLED")


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("seed: 0\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
        )
    return repo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stage_run_logs_params_metrics_tags_and_artifacts(
    store: str, git_repo: Path, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream_run.json"
    upstream.write_text(json.dumps({"run_id": "abc123", "experiment_id": "1"}))
    run_file = tmp_path / "out" / "run.json"
    (tmp_path / "genotype.json").write_text('{"normal": []}')
    params = {"search": {"k": 4, "epochs": 50, "ops": ["sep_conv_3x3", "skip_connect"]}}
    with stage_run(
        "search",
        params=params,
        profile="tiny",
        seed=3,
        repo_root=git_repo,
        tracking_uri=store,
        experiment="logs",
        dataset="cifar10",
        dataset_size=50000,
        upstream_run_files=[upstream],
        run_file=run_file,
    ) as tracker:
        for epoch in range(3):
            tracker.log_metrics({"train/loss": 1.0 / (epoch + 1), "val/top1_err": 0.5}, epoch)
            tracker.log_record("search/genotype", {"normal": [epoch]}, epoch)
        tracker.log_summary({"test/top1_err": 0.25})
        tracker.log_artifact(tmp_path / "genotype.json")
        tracker.log_dict({"k": 4}, "config.json")
        tracker.set_tags({"note": 1})

    saved = json.loads(run_file.read_text())
    assert saved["tracking_uri"] == store and saved["tracking_ok"] is True
    client = MlflowClient(store)
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "search:cifar10"
    assert run.info.experiment_id == saved["experiment_id"]
    assert run.data.params == {
        "search.k": "4",
        "search.epochs": "50",
        "search.ops": '["sep_conv_3x3", "skip_connect"]',
        "profile": "tiny",
        "seed": "3",
        "dataset": "cifar10",
        "dataset_size": "50000",
    }
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=git_repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    expected_tags = {
        "stage": "search",
        "dvc_stage": "search",
        "profile": "tiny",
        "note": "1",
        "upstream_run_ids": "abc123",
        "git_commit": head,
        "git_dirty": "false",
    }
    assert expected_tags.items() <= run.data.tags.items()
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert run.data.metrics["test/top1_err"] == 0.25
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"environment.json", "genotype.json", "config.json", "records"} <= top
    records = client.download_artifacts(
        run.info.run_id, "records/search_genotype.json", str(tmp_path)
    )
    assert json.loads(Path(records).read_text()) == [{"step": e, "normal": [e]} for e in range(3)]
    env = client.download_artifacts(run.info.run_id, "environment.json", str(tmp_path))
    assert json.loads(Path(env).read_text())["packages"]["torch"] == torch.__version__.split("+")[0]


def test_git_dirty_and_long_or_many_params(store: str, git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "params.yaml").write_text("seed: 1\n")
    (git_repo / "dvc.lock").write_text("schema: '2.0'\n")  # rewritten by repro: not dirt
    params = {f"p{i:03d}": i for i in range(250)} | {"long": "x" * 10_000}
    with stage_run(
        "train",
        params=params,
        profile="tiny",
        seed=0,
        repo_root=git_repo,
        tracking_uri=store,
        experiment="many",
        run_file=tmp_path / "r.json",
    ) as tracker:
        pass
    run = MlflowClient(store).get_run(tracker.run_id)
    assert run.data.tags["git_dirty"] == "true"
    assert len(run.data.params) == 250 + 3 and run.data.params["p249"] == "249"
    assert len(run.data.params["long"]) == MAX_PARAM_CHARS


def test_clean_tree_ignores_dvc_lock(store: str, git_repo: Path) -> None:
    (git_repo / "dvc.lock").write_text("schema: '2.0'\n")
    with stage_run(
        "train",
        params={},
        profile="tiny",
        seed=0,
        repo_root=git_repo,
        tracking_uri=store,
        experiment="lock",
    ) as tracker:
        pass
    assert MlflowClient(store).get_run(tracker.run_id).data.tags["git_dirty"] == "false"


def test_failure_inside_the_stage_marks_the_run_failed(store: str, tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    with (
        pytest.raises(ValueError, match="diverged"),
        stage_run(
            "search",
            params={},
            profile="tiny",
            seed=0,
            repo_root=tmp_path,
            tracking_uri=store,
            experiment="fails",
            run_file=run_file,
        ) as tracker,
    ):
        raise ValueError("loss diverged")
    assert MlflowClient(store).get_run(tracker.run_id).info.status == "FAILED"
    assert not run_file.exists()
    assert mlflow.active_run() is None


def test_backend_failure_mid_run_warns_once_and_training_goes_on(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise mlflow.exceptions.MlflowException("database is locked")

    run_file = tmp_path / "run.json"
    with stage_run(
        "search",
        params={},
        profile="tiny",
        seed=0,
        repo_root=tmp_path,
        tracking_uri=store,
        experiment="broken",
        run_file=run_file,
    ) as tracker:
        monkeypatch.setattr(mlflow, "log_metrics", broken)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for epoch in range(3):
                tracker.log_metrics({"train/loss": 1.0}, epoch)
                tracker.log_record("search/genotype", {"normal": []}, epoch)
            tracker.log_summary({"test/top1_err": 0.1})
            tracker.log_dict({"a": 1}, "a.json")
        monkeypatch.undo()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "tracking disabled" in messages[0], messages
    assert not tracker.ok
    assert json.loads(run_file.read_text())["tracking_ok"] is False
    assert mlflow.active_run() is None


def test_log_model_logs_a_pytorch_model_or_warns(store: str, tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    with stage_run(
        "train",
        params={},
        profile="tiny",
        seed=0,
        repo_root=tmp_path,
        tracking_uri=store,
        experiment="model",
    ) as tracker:
        tracker.log_model(model, "final_network", np.zeros((1, 4), np.float32))
        with pytest.warns(RuntimeWarning, match="could not log model"):
            tracker.log_model("not a model", "broken", np.zeros((1, 4), np.float32))
    assert tracker.ok
    logged = mlflow.search_logged_models(
        experiment_ids=[tracker.experiment_id], output_format="list"
    )
    ready = [(m.name, m.source_run_id) for m in logged if str(m.status) == "READY"]
    assert ready == [("final_network", tracker.run_id)], [(m.name, m.status) for m in logged]


def test_a_logged_model_is_registered_with_its_lineage_tags_and_cell_alias(
    store: str, git_repo: Path
) -> None:
    model = torch.nn.Linear(4, 3).eval()
    genotype = {"normal": [["sep_conv_3x3", 0]], "reduce": [["max_pool_3x3", 1]]}
    metrics = {"test/top1_err": 7.0234, "model/params_m": 0.01}
    versions = []
    for _ in range(2):  # the alias moves to the newest version of its cell
        with stage_run(
            "train_cifar10",
            params={},
            profile="tiny",
            seed=0,
            repo_root=git_repo,
            tracking_uri=store,
            experiment="registry",
            dvc_stage="train_cifar10@random:1",
        ) as tracker:
            model_id = tracker.log_model(model, "model", np.zeros((1, 4), np.float32))
            request = registration("registry", "cifar10", "random:1", genotype, metrics)
            versions.append(tracker.register_model(model_id, request))
    assert versions == ["1", "2"]
    client = MlflowClient(store)
    version = client.get_model_version_by_alias("registry-cifar10", "random-1")
    assert str(version.version) == "2" and version.run_id == tracker.run_id
    assert json.loads(version.tags["genotype"]) == genotype
    assert version.tags["test/top1_err"] == "7.0234" and "test/top5_err" not in version.tags
    assert version.tags["dvc_stage"] == "train_cifar10@random:1"
    assert version.tags["git_commit"] == client.get_run(tracker.run_id).data.tags["git_commit"]
    assert "test/top1_err 7.02%" in version.description


def test_registration_names_aliases_and_an_unregistrable_model_warns(
    store: str, tmp_path: Path
) -> None:
    imagenet = registration("pcdarts", "imagenet", "searched", {}, {"test/top5_err": 1.0})
    assert imagenet.name == "pcdarts-imagenet"
    assert imagenet.aliases == ("searched", "ssd-backbone")  # transfer_ssd's backbone
    assert registration("pcdarts", "imagenet", "searched:cifar10", {}, {}).aliases == (
        "searched-cifar10",
    )
    assert cell_alias("random:0") == "random-0" and cell_alias("cells/my.json") == "cells-my-json"
    assert cell_alias("latest") == "cell-latest" and cell_alias("v2") == "cell-v2"  # reserved
    with stage_run(
        "train", params={}, profile="tiny", seed=0, repo_root=tmp_path, tracking_uri=store
    ) as tracker:
        assert tracker.register_model(None, imagenet) is None  # log_model failed: nothing
        with pytest.warns(RuntimeWarning, match="could not register model 'pcdarts-imagenet'"):
            assert tracker.register_model("m-no-such-model", imagenet) is None
    assert tracker.ok  # the registry is an observer: tracking goes on


def test_default_store_is_the_main_repos_also_from_a_dvc_temp_workspace(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    workspace = repo / ".dvc" / "tmp" / "exps" / "tmpabc123"
    workspace.mkdir(parents=True)
    expected = f"sqlite:///{repo.resolve()}/mlflow.db"
    assert default_tracking_uri(repo) == expected
    assert default_tracking_uri(workspace) == expected
    assert default_tracking_uri(workspace / "stages") == expected


def test_env_var_beats_config_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_tracking_uri(tmp_path) == default_tracking_uri(tmp_path)
    assert resolve_tracking_uri(tmp_path, "http://cfg:5000") == "http://cfg:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(tmp_path, "http://cfg:5000") == "http://env:5000"


def test_unreachable_server_fails_fast_before_the_stage_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=uri.replace(".", r"\.")) as error:
        check_tracking_server(uri, timeout_s=2)
    assert time.monotonic() - start < 3
    assert "MLFLOW_TRACKING_URI" in str(error.value)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ran = False
    with (
        pytest.raises(TrackingUnavailableError),
        stage_run("search", params={}, profile="tiny", seed=0, repo_root=tmp_path),
    ):
        ran = True
    assert not ran


def test_silent_server_fails_within_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(TrackingUnavailableError, match="within 1 s"):
            check_tracking_server(uri, timeout_s=1)
        assert time.monotonic() - start < 2.5


class _HostCheckingServer(http.server.BaseHTTPRequestHandler):
    """MLflow's answers: /health to anyone, the API only to the host names it allows."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        refused = self.path != "/health" and not self.headers["Host"].startswith("127.0.0.1")
        body = b"Invalid Host header - possible DNS rebinding attack detected" if refused else b"{}"
        self.send_response(403 if refused else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_refuses_its_name_is_one_line_naming_allowed_hosts() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostCheckingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        check_tracking_server(f"http://127.0.0.1:{port}", timeout_s=2)  # an allowed name
        with pytest.raises(TrackingUnavailableError, match="--allowed-hosts localhost"):
            check_tracking_server(f"http://localhost:{port}", timeout_s=2)
    finally:
        server.shutdown()
        server.server_close()


def test_read_only_store_folder_fails_fast(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    if os.access(folder, os.W_OK):
        pytest.skip("running as a user that can write anywhere (root)")
    with pytest.raises(TrackingUnavailableError, match="not writable"):
        check_tracking_server(f"sqlite:///{folder}/mlflow.db")
