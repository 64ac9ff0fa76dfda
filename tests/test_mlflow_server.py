"""A stage logs to a real ``mlflow server`` (SQLite backend, on 127.0.0.1); found over REST."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.tracking import stage_run

START_TIMEOUT_S = 120  # tables, app import and uvicorn start take ~30 s on a busy 2-core box


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path) -> Iterator[str]:
    """Serve ``backend_store_uri`` on 127.0.0.1 until the block ends; yields the base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(workdir / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # No background job runner (a tree of huey workers) for a test server.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited ({server.returncode}):\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server not up in {START_TIMEOUT_S} s:\n{log_path.read_text()}"
                    )
                time.sleep(0.5)
        yield url
    finally:  # the server's own process group: uvicorn and its worker
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


@pytest.mark.slow
def test_a_stage_logs_to_a_tracking_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    genotype = tmp_path / "genotype.json"
    genotype.write_text('{"normal": []}')
    run_file = tmp_path / "run.json"
    with mlflow_server(f"sqlite:///{tmp_path}/server.db", tmp_path) as url:
        with stage_run(
            "search",
            params={"search": {"k": 4}},
            profile="tiny",
            seed=0,
            repo_root=tmp_path,
            tracking_uri=url,
            experiment="server",
            dataset="cifar10",
            run_file=run_file,
        ) as tracker:
            for epoch in range(3):
                tracker.log_metrics({"val/top1_err": 0.5 - 0.1 * epoch}, epoch)
            tracker.log_artifact(genotype)
        saved = json.loads(run_file.read_text())
        assert saved["tracking_uri"] == url and saved["tracking_ok"] is True

        found = post_json(
            f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [saved["experiment_id"]]}
        )
        (run,) = found["runs"]
        assert run["info"]["run_id"] == saved["run_id"]
        assert run["info"]["run_name"] == "search:cifar10"
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m for m in run["data"]["metrics"]}
        assert metrics["val/top1_err"]["step"] == 2
        assert metrics["val/top1_err"]["value"] == pytest.approx(0.3)
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["search.k"] == "4"
        query = f"run_id={saved['run_id']}"
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/artifacts/list?{query}") as response:
            listed = {f["path"] for f in json.load(response)["files"]}
        assert {"genotype.json", "environment.json"} <= listed
