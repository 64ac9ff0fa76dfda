"""Two machines on one: the search and the training as two-node torchrun jobs between two
Linux network namespaces, each with one end of a veth pair and one address on it (nothing
else is reachable from them, and nothing else is contacted).

Node 0 runs the stage the way the README says, ``dvc repro <stage>`` in a git + DVC
checkout; node 1 runs the stage's own command (its ``cmd`` in dvc.yaml) in a copy of the
checkout with the same ``python -m stages.compose`` overrides and the stage's inputs (as
``dvc pull`` gives them). Node 0's address sorts after node 1's, so torchrun's own node
order would have made node 1 rank 0: the writer would have been the wrong machine.

Checked (the search): only node 0 writes outputs, checkpoints and MLflow runs; every rank
ends with the same weights; node 1 killed mid-search is restarted by torchrun and both nodes
resume from node 0's checkpoint to the result of the same stage as 2 uninterrupted
processes on one machine, bit for bit.

Needs root and iproute2's ``ip`` (skipped, saying which is missing, otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
import torch
from test_pipeline import BIN, SHRINK, _copy_repo

pytestmark = pytest.mark.slow

NODE0, NODE1 = "10.231.0.2", "10.231.0.1"  # node 0 sorts last: see the module docstring
PREFIX = 24  # one /24 for the pair: the two addresses reach each other and nothing else
PORT = 29500  # torchrun's default rendezvous port, inside node 0's namespace only
STARTUP_S = 90  # a stage's start (imports, params, tracking check) on a busy 2-core machine
STAGE_TIMEOUT_S = 600  # one two-node stage of the shrunken tiny profile: ~1 min on 2 cores
SEARCH = ("stages.search", "cifar10", "0")


def two_nodes(**dist: object) -> list[str]:
    """The overrides every node composes with (``dist``: other dist.* values)."""
    values = {"nnodes": 2, "rdzv_endpoint": f"{NODE0}:{PORT}", "rdzv_timeout_s": 300, **dist}
    return [f"dist.{key}={value}" for key, value in values.items()]




@dataclass
class Host:
    """A network namespace with one address, and a checkout to run in it."""

    netns: str
    address: str
    repo: Path
    env: dict[str, str]
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, *argv: str) -> subprocess.Popen[str]:
        """``argv`` in this host's namespace and checkout, in a session of its own."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv],
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def compose(self, *overrides: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "stages.compose", *SHRINK, *overrides],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _why_no_netns() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add): run the suite as root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (Debian: apt-get install iproute2)"
    return None


def _kill_all_in(netns: str) -> None:
    """SIGKILL every process left in ``netns`` (only this module's: the name is its own)."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str]]:
    """Node 0's and node 1's namespaces, joined by one veth pair; removed at the end, also
    when a test fails (names unique to this process)."""
    if (why := _why_no_netns()) is not None:
        pytest.skip(why)
    tag = f"pcd{os.getpid() % 100_000}"  # interface names have at most 15 characters
    netns, veth = (f"{tag}n0", f"{tag}n1"), (f"{tag}v0", f"{tag}v1")
    try:
        try:
            _ip("netns", "add", netns[0])
        except subprocess.CalledProcessError as error:
            pytest.skip(f"ip netns add failed: {error.stderr.strip()}")
        _ip("netns", "add", netns[1])
        _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for ns, end, address in zip(netns, veth, (NODE0, NODE1), strict=True):
            _ip("link", "set", end, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", end)
            _ip("-n", ns, "link", "set", end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield netns
    finally:
        for ns in netns:
            _kill_all_in(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", veth[0]], capture_output=True)  # if never moved


@dataclass
class Study:
    node0: Host  # git + DVC checkout: `dvc repro <stage>`
    node1: Host  # a copy: the stage's own command
    single: Path  # the same stages as 2 processes on one machine (the reference)
    reference: subprocess.Popen[str]  # running the reference in the background


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t")
    env.update(GIT_COMMITTER_EMAIL="t@t", PYTHONDONTWRITEBYTECODE="1")
    env.pop("MLFLOW_TRACKING_URI", None)  # each checkout's own SQLite store
    env.pop("PCDARTS_DEBUG", None)
    return env


def _run(repo: Path, *argv: str) -> str:
    done = subprocess.run(argv, cwd=repo, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{argv} failed:\n{(done.stdout + done.stderr)[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def study(namespaces: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    base = tmp_path_factory.mktemp("two_hosts")
    node0 = Host(namespaces[0], NODE0, base / "node0", _env())
    node1 = Host(namespaces[1], NODE1, base / "node1", _env())
    single = base / "single"
    for repo in (node0.repo, node1.repo, single):
        _copy_repo(repo)
    node0.compose(*two_nodes())
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        _run(node0.repo, *argv)
    _run(node0.repo, "dvc", "repro", "prepare")  # one process: no network needed
    for repo in (node1.repo, single):  # what `dvc pull data/prepared` gives the other nodes
        shutil.copytree(node0.repo / "data/prepared", repo / "data/prepared")
    node1.compose(*two_nodes())
    _run(single, sys.executable, "-m", "stages.compose", *SHRINK, "dist.nproc_per_node=2")
    reference = subprocess.Popen(  # beside the two-node runs: the machine has two cores
        [sys.executable, "-m", *SEARCH],
        cwd=single,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield Study(node0, node1, single, reference)
    if reference.poll() is None:
        reference.kill()
        reference.communicate()
    for process in node0.started + node1.started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def _reference(study: Study) -> Path:
    """The single-machine checkout once its search has finished."""
    out, _ = study.reference.communicate(timeout=2 * STAGE_TIMEOUT_S)
    assert study.reference.returncode == 0, out[-3000:]
    return study.single


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=STAGE_TIMEOUT_S)
    return process.returncode, out, err


def _tensors_equal(a: Path, b: Path) -> None:
    ours, theirs = torch.load(a)["model"], torch.load(b)["model"]
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert torch.equal(value, theirs[name]), name


def _wrote_nothing(host: Host, *kept: str) -> None:
    """Node 1 wrote no output, checkpoint or MLflow store (``kept``: what it was given)."""
    outputs = host.repo / "outputs"
    found = sorted(str(p.relative_to(host.repo)) for p in outputs.rglob("*") if p.is_file())
    assert found == sorted(kept)
    for name in (".checkpoints", "mlflow.db", "mlruns"):
        assert not (host.repo / name).exists(), name


def _runs(host: Host, dvc_stage: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{host.repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pcdarts")
    assert experiment is not None
    query = f"tags.dvc_stage = '{dvc_stage}'"
    return list(client.search_runs([experiment.experiment_id], query))


def _worker_of(launcher: subprocess.Popen[str]) -> int:
    """The pid of the one worker torchrun started under a node's stage process."""
    import psutil

    deadline = time.monotonic() + STARTUP_S
    while not (children := psutil.Process(launcher.pid).children()):
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.2)
    (worker,) = children
    return int(worker.pid)


def _kill_node1_after_first_checkpoint(study: Study, node1: subprocess.Popen[str]) -> None:
    checkpoints = study.node0.repo / ".checkpoints/search-cifar10"
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not list(checkpoints.glob("*.pt")):  # epoch 1 of 2 done: kill it in epoch 2
        assert time.monotonic() < deadline, "no checkpoint written"
        assert node1.poll() is None, node1.communicate()
        time.sleep(0.2)
    os.kill(_worker_of(node1), signal.SIGKILL)


SEARCH_OUTS = ("genotype.json", "history.json", "curves.json", "supernet.pt")


def test_node1_killed_mid_search_restarts_and_ends_with_the_one_machine_result(
    study: Study,
) -> None:
    """Node 0 through DVC, node 1 through the stage's command; node 1's worker is killed
    after the first epoch: torchrun restarts both nodes (dist.max_restarts=1), both resume
    from node 0's checkpoint, and the result is the uninterrupted 2-process result, bit for
    bit."""
    for host in (study.node0, study.node1):
        host.compose(*two_nodes(max_restarts=1))
    node0 = study.node0.start("dvc", "repro", "search@cifar10-0")
    node1 = study.node1.start(sys.executable, "-m", *SEARCH)
    _kill_node1_after_first_checkpoint(study, node1)
    (rc0, out0, err0), (rc1, out1, err1) = _finish(node0), _finish(node1)
    assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
    assert f"lost the node at {NODE1} mid-stage" in err0  # the first attempt's one line
    for out in (out0, out1):
        assert "resuming search@cifar10-0 after epoch 1" in out, out
    assert "all 2 processes end with identical weights" in out0
    ours = study.node0.repo / "outputs/search/cifar10/seed_0"
    theirs = _reference(study) / "outputs/search/cifar10/seed_0"
    for name in SEARCH_OUTS[:3]:
        assert (ours / name).read_text() == (theirs / name).read_text(), name
    _tensors_equal(ours / "supernet.pt", theirs / "supernet.pt")
    metrics = json.loads((ours / "metrics.json").read_text())
    assert metrics["cost"]["device_count"] == 2  # both nodes' processes counted
    assert not list((study.node0.repo / ".checkpoints/search-cifar10").glob("*.pt"))  # done
    _wrote_nothing(study.node1)
    runs = _runs(study.node0, "search@cifar10-0")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # the killed attempt
