"""A team's tracking server: ``scripts/tracking_server.py`` with Debian's PostgreSQL as
backend store and artifacts proxied through the server, on free ports of 127.0.0.1.

The shrunken tiny study (``SHRINK``, in a temporary git copy of the repository) runs
``dvc repro train_cifar10@searched train_imagenet@searched`` with ``MLFLOW_TRACKING_URI``
at the server: prepare, both searches at seed 0 and both trainings. Checked through
``MlflowClient`` against the server: one run per stage with its metrics and lineage tags;
an artifact and the registered network download through the server (``mlflow-artifacts:``)
equal to the local outputs; both networks are registered, by alias, with genotype, errors
and DVC stage; the API answers the names the team reaches the server by (its own host
name, ``--allowed-hosts``) and no other. Then: a PostgreSQL that is down, and (under root) a
folder the postgres user cannot enter, are one line from the script; SIGTERM stops MLflow
and PostgreSQL; a stage against the stopped server is the dead-server policy's line;
SIGTERM while the script starts leaves nothing running either.

Needs Debian's PostgreSQL (``.ci/run`` installs it; skipped, saying why, without it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow import MlflowClient
from test_mlflow_server import free_port
from test_pipeline import BIN, ROOT, SHRINK, _copy_repo

from pipeline.config import SEARCHED
from pipeline.paths import prepare_outs, search_outs, train_outs
from pipeline.tracking import API_PROBE

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "tracking_server.py"
# First start: initdb and MLflow's tables on PostgreSQL, 7 to 44 s measured on one busy core.
SERVER_START_TIMEOUT_S = 240
# One command of the study; the five shrunken stages under dvc repro and the server's start
# took 57 to 143 s together on one busy core.
STUDY_TIMEOUT_S = 600
# SIGTERM: MLflow's workers (the script gives them 30 s), then pg_ctl stop: 1 to 9 s measured
STOP_TIMEOUT_S = 90
TARGETS = ("train_cifar10@searched", "train_imagenet@searched")
TEAM_NAME = "mlflow.team.example"  # a name the team reaches the server by: --allowed-hosts
STAGES = ("prepare", "search@cifar10-0", "search@imagenet-0", *TARGETS)


def _script() -> ModuleType:
    """scripts/tracking_server.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("tracking_server", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _why_no_postgres() -> str | None:
    script = _script()
    try:
        script._postgres_bin()
    except script.ServerError as error:
        return str(error)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(script.POSTGRES_USER)
        except KeyError:
            return f"no {script.POSTGRES_USER} system user to run PostgreSQL as (root cannot)"
    return None


@dataclass
class TeamServer:
    """The script's process, its folder and URL."""

    process: subprocess.Popen[str]
    folder: Path
    url: str

    @property
    def data(self) -> Path:
        return self.folder / "postgres"

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return int(self.process.returncode)

    def log(self) -> str:
        """The ends of its logs, for a failure's message."""
        names = ("stdout.log", "stderr.log", "mlflow-server.log", "postgres-run/postgres.log")
        found = [(name, self.folder / name) for name in names]
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in found if p.is_file())


def processes_in(folder: Path) -> list[int]:
    """Pids of the processes with an argument in ``folder``: PostgreSQL's ``-D <folder>/postgres``,
    MLflow's ``--artifacts-destination <folder>/artifacts``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            words = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if any(word.startswith(f"{folder}/") for word in words):
                found.append(int(proc.name))
    return found


def _force_stop_postgres(data: Path) -> None:
    """pg_ctl stop -m immediate, as the script would run it: the last resort of teardown."""
    if not (data / "postmaster.pid").exists():
        return
    script = _script()
    command = [str(script._postgres_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", script.POSTGRES_USER, "--", *command]
    subprocess.run(command, capture_output=True, timeout=STOP_TIMEOUT_S)


def start_server() -> TeamServer:
    """The script on a fresh folder that the postgres user may enter (pytest's tmp folders
    are private to root), on free ports; skips where there is no PostgreSQL."""
    if (why := _why_no_postgres()) is not None:
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="pcdarts-team-"))
    folder.chmod(0o755)  # PostgreSQL runs as the postgres user under root
    port, pg_port = free_port(), free_port()
    with (folder / "stdout.log").open("w") as out, (folder / "stderr.log").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(folder), "--port", str(port)]
            + ["--pg-port", str(pg_port), "--workers", "1", "--allowed-hosts", TEAM_NAME],
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    return TeamServer(process, folder, f"http://127.0.0.1:{port}")


def _clean_up(team: TeamServer) -> None:
    team.stop()
    _force_stop_postgres(team.data)
    shutil.rmtree(team.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[TeamServer]:
    """A team server, up, until the module ends or a test stops it."""
    team = start_server()
    process = team.process
    try:
        start = time.monotonic()
        while True:
            if process.poll() is not None:
                pytest.fail(f"the tracking server exited ({process.returncode}):\n{team.log()}")
            health = f"{team.url}/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2):
                break
            if time.monotonic() - start > SERVER_START_TIMEOUT_S:
                pytest.fail(f"no tracking server in {SERVER_START_TIMEOUT_S} s:\n{team.log()}")
            time.sleep(0.5)
        print(f"tracking server up in {time.monotonic() - start:.0f} s")
        yield team
    finally:
        _clean_up(team)


@dataclass
class Study:
    repo: Path
    env: dict[str, str]
    server: TeamServer

    def run_file(self, stage: str) -> dict[str, object]:
        """The stage's mlflow_run.json: run id, tracking URI, whether tracking held."""
        name, _, item = stage.partition("@")
        if name == "prepare":
            path = prepare_outs()["run"]
        elif name == "search":
            path = search_outs(*item.split("-"))["run"]
        else:
            path = train_outs(name.removeprefix("train_"), item)["run"]
        return dict(json.loads((self.repo / path).read_text()))

    def trained(self, dataset: str, name: str) -> Path:
        """An output of train_<dataset>@searched: ``metrics`` or ``model``."""
        return self.repo / train_outs(dataset, SEARCHED)[name]


@pytest.fixture(scope="module")
def study(server: TeamServer, tmp_path_factory: pytest.TempPathFactory) -> Study:
    repo = tmp_path_factory.mktemp("team") / "repo"
    _copy_repo(repo)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": server.url,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for command in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "stages.compose", *SHRINK],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "copy"],
        ["dvc", "repro", *TARGETS],
    ):
        done = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S
        )
        output = (done.stdout + done.stderr)[-4000:]
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{output}\n{server.log()}"
    return Study(repo, env, server)


def _runs(client: MlflowClient) -> dict[str, mlflow.entities.Run]:
    experiment = client.get_experiment_by_name("pcdarts")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_stage: dict[str, list[mlflow.entities.Run]] = {}
    for run in runs:
        by_stage.setdefault(run.data.tags["dvc_stage"], []).append(run)
    assert {stage: len(found) for stage, found in by_stage.items()} == dict.fromkeys(STAGES, 1)
    return {stage: found[0] for stage, found in by_stage.items()}


def test_one_run_per_stage_with_its_metrics_and_lineage(study: Study) -> None:
    client = MlflowClient(study.server.url)
    runs = _runs(client)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=study.repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    for stage, run in runs.items():
        saved = study.run_file(stage)
        assert saved["run_id"] == run.info.run_id and saved["tracking_uri"] == study.server.url
        assert saved["tracking_ok"] is True, stage
        assert run.info.status == "FINISHED", stage
        assert run.data.tags["git_commit"] == head and run.data.params["profile"] == "tiny"
    run_id = {stage: run.info.run_id for stage, run in runs.items()}
    upstream = {stage: run.data.tags["upstream_run_ids"] for stage, run in runs.items()}
    assert upstream == {
        "prepare": "",
        "search@cifar10-0": run_id["prepare"],
        "search@imagenet-0": run_id["prepare"],
        "train_cifar10@searched": run_id["search@cifar10-0"],
        "train_imagenet@searched": run_id["search@imagenet-0"],
    }
    assert runs["prepare"].data.metrics["data/cifar10/train_images"] > 0
    history = client.get_metric_history(run_id["search@cifar10-0"], "search/alpha_entropy")
    assert [m.step for m in history] == [0, 1]  # per epoch, two epochs
    local = json.loads(study.trained("cifar10", "metrics").read_text())
    logged = runs["train_cifar10@searched"].data.metrics
    assert logged["test/top1_err"] == pytest.approx(local["test/top1_err"])


def test_artifacts_go_and_come_back_through_the_server(study: Study, tmp_path: Path) -> None:
    client = MlflowClient(study.server.url)
    run = _runs(client)["train_cifar10@searched"]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    got = Path(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path)))
    local = study.trained("cifar10", "metrics")
    assert got.read_bytes() == local.read_bytes()
    # the server wrote it into its own folder: the client needs no shared file system
    stored = list((study.server.folder / "artifacts").rglob("metrics.json"))
    assert any(path.read_bytes() == local.read_bytes() for path in stored), stored


def test_the_networks_are_registered_and_picked_by_alias(study: Study) -> None:
    client = MlflowClient(study.server.url)
    runs = _runs(client)
    for dataset, alias in (("cifar10", "searched"), ("imagenet", "ssd-backbone")):
        version = client.get_model_version_by_alias(f"pcdarts-{dataset}", alias)
        stage = f"train_{dataset}@searched"
        checkpoint = torch.load(study.trained(dataset, "model"), weights_only=False)
        metrics = json.loads(study.trained(dataset, "metrics").read_text())
        assert version.run_id == runs[stage].info.run_id
        assert set(version.aliases) >= {"searched", alias}
        assert json.loads(version.tags["genotype"]) == checkpoint["genotype"]
        for key in ("test/top1_err", "test/top5_err"):
            assert float(version.tags[key]) == pytest.approx(metrics[key], rel=1e-5), key
        assert version.tags["dvc_stage"] == stage
        assert version.tags["git_commit"] == runs[stage].data.tags["git_commit"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(study.server.url)
    try:  # the registered network itself, downloaded through the server by its alias
        model = mlflow.pytorch.load_model("models:/pcdarts-cifar10@searched")
    finally:
        mlflow.set_tracking_uri(previous)
    local = torch.load(study.trained("cifar10", "model"), weights_only=False)
    state = model.state_dict()
    assert state.keys() == local["model"].keys()
    for name, value in state.items():  # tensors, and the network's extra state (drop-path)
        same = torch.equal(value, local["model"][name]) if torch.is_tensor(value) else None
        assert same if same is not None else value == local["model"][name], name


def test_the_api_answers_the_servers_own_names_and_the_teams_only(server: TeamServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    answers = {}
    for host in (socket.gethostname(), TEAM_NAME, "127.0.0.1", "elsewhere.example"):
        request = urllib.request.Request(server.url + API_PROBE, headers={"Host": f"{host}:{port}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answers[host] = response.status
        except urllib.error.HTTPError as error:  # MLflow's DNS-rebinding protection
            answers[host] = error.code
    assert answers == {
        socket.gethostname(): 200,
        TEAM_NAME: 200,
        "127.0.0.1": 200,
        "elsewhere.example": 403,
    }


def test_a_postgres_that_is_down_is_one_line(tmp_path: Path) -> None:
    uri = f"postgresql://mlflow@127.0.0.1:{free_port()}/mlflow"  # nothing listens there
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--backend-store-uri", uri],
        capture_output=True,
        text=True,
        timeout=SERVER_START_TIMEOUT_S,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("tracking server: PostgreSQL at 127.0.0.1:"), done.stderr
    assert "is down" in done.stderr


def test_a_folder_the_postgres_user_cannot_enter_is_one_line(tmp_path: Path) -> None:
    if (why := _why_no_postgres()) is not None:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("only under root does PostgreSQL run as another user (postgres)")
    tmp_path.chmod(0o700)  # private to root, as pytest's own tmp folders are
    command = [sys.executable, str(SCRIPT), str(tmp_path / "server")]
    ports = ["--port", str(free_port()), "--pg-port", str(free_port())]
    done = subprocess.run([*command, *ports], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "chmod o+x" in done.stderr, done.stderr


def test_sigterm_stops_both_and_a_stage_then_gets_the_dead_server_line(study: Study) -> None:
    server = study.server
    assert len(processes_in(server.folder)) >= 2, "PostgreSQL and MLflow were not running"
    start = time.monotonic()
    assert server.stop() == 0, server.log()
    print(f"tracking server stopped in {time.monotonic() - start:.0f} s")
    assert not (server.data / "postmaster.pid").exists(), server.log()
    assert processes_in(server.folder) == [], "PostgreSQL or MLflow outlived the server"
    done = subprocess.run(
        [sys.executable, "-m", "stages.prepare"],
        cwd=study.repo,
        env=study.env,
        capture_output=True,
        text=True,
        timeout=STUDY_TIMEOUT_S,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("stages.prepare: MLflow tracking server "), done.stderr
    assert f"{server.url} is unreachable" in done.stderr


def test_sigterm_while_starting_leaves_nothing_running() -> None:
    team = start_server()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not (team.data / "postmaster.pid").exists():  # PostgreSQL is starting
            assert team.process.poll() is None and time.monotonic() < deadline, team.log()
            time.sleep(0.1)
        assert team.stop() == 1, team.log()  # before MLflow answers: ~5 s or more after
        err = (team.folder / "stderr.log").read_text()
        assert err == "tracking server: stopped while starting; nothing left running\n", err
        assert not (team.data / "postmaster.pid").exists(), team.log()
        assert processes_in(team.folder) == [], "PostgreSQL or MLflow outlived the script"
    finally:
        _clean_up(team)
