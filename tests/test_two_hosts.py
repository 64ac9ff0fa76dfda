"""Two machines on one: the search and the training as two-node torchrun jobs between two
Linux network namespaces, each with one end of a veth pair and one address on it (nothing
else is reachable from them, and nothing else is contacted).

Node 0 runs the stage the way the README says, ``dvc repro <stage>`` in a git + DVC
checkout; node 1 runs the stage's own command (its ``cmd`` in dvc.yaml) in a copy of the
checkout with the same ``python -m stages.compose`` overrides and the stage's inputs (as
``dvc pull`` gives them). Node 0's address sorts after node 1's, so torchrun's own node
order would have made node 1 rank 0: the writer would have been the wrong machine.

Checked: only node 0 writes outputs, checkpoints and MLflow runs; every rank ends with the
same weights; the result equals the same stage as 2 processes on one machine, bit for bit;
node 1 killed mid-search is restarted by torchrun and both nodes resume from node 0's
checkpoint to that same result; without restarts node 0 stops with one line naming the lost
node and how to resume, and no declared output is left; a wrong rendezvous port, a node 0
that never comes, and nodes whose params.yaml differ each stop with one line.

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
CONNECT_TIMEOUT_S = 15  # dist.rdzv_connect_timeout_s of the faults below
JOIN_TIMEOUT_S = 20  # dist.rdzv_timeout_s of the node 0 that waits alone below
STARTUP_S = 90  # a stage's start (imports, params, tracking check) on a busy 2-core machine
STAGE_TIMEOUT_S = 600  # one two-node stage of the shrunken tiny profile: ~1 min on 2 cores
SEARCH, TRAIN = ("stages.search", "cifar10", "0"), ("stages.train", "cifar10", "searched")


def two_nodes(**dist: object) -> list[str]:
    """The overrides every node composes with (``dist``: other dist.* values)."""
    values = {"nnodes": 2, "rdzv_endpoint": f"{NODE0}:{PORT}", "rdzv_timeout_s": 300, **dist}
    return [f"dist.{key}={value}" for key, value in values.items()]


C10D_WARNING = "[W"  # c10d's C++ warnings (no reverse DNS for these addresses), not ours


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
        f"{sys.executable} -m {' '.join(SEARCH)} && {sys.executable} -m {' '.join(TRAIN)}",
        shell=True,
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
    """The single-machine checkout once both of its stages have finished."""
    out, _ = study.reference.communicate(timeout=2 * STAGE_TIMEOUT_S)
    assert study.reference.returncode == 0, out[-3000:]
    return study.single


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=STAGE_TIMEOUT_S)
    return process.returncode, out, err


def _ours(stderr: str) -> list[str]:
    """stderr without c10d's C++ warnings, MLflow's INFO lines and Python warnings."""
    keep = []
    for line in stderr.splitlines():
        if line.startswith(C10D_WARNING) or " INFO mlflow" in line or not line.strip():
            continue
        if "Warning:" in line or line.startswith(("  ", "grad.sizes", "bucket_view")):
            continue  # DDP's stride warning (2 lines + the source line), every run alike
        keep.append(line)
    return keep


def _tensors_equal(a: Path, b: Path) -> None:
    """The two files' ``model`` entries are equal, every tensor bit for bit (a state dict
    may nest plain values, such as a module's extra state)."""
    _equal(torch.load(a)["model"], torch.load(b)["model"], "model")


def _equal(ours: object, theirs: object, where: str) -> None:
    if isinstance(ours, torch.Tensor):
        assert isinstance(theirs, torch.Tensor) and torch.equal(ours, theirs), where
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), where
        for name, value in ours.items():
            _equal(value, theirs[name], f"{where}.{name}")
    else:
        assert ours == theirs, where


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


def test_two_node_training_equals_the_one_machine_training(study: Study) -> None:
    """train_cifar10@searched as a two-node job: node 1 gets the searched cell as `dvc pull`
    would; only node 0 writes; the trained network is the 2-process one, bit for bit."""
    genotype = "outputs/search/cifar10/seed_0/genotype.json"
    (study.node1.repo / genotype).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(study.node0.repo / genotype, study.node1.repo / genotype)
    for host in (study.node0, study.node1):
        host.compose(*two_nodes())
    # -s: this stage alone (the search upstream ran with other dist.* values: plain `dvc
    # repro` on node 0 would run it again first, while node 1 runs the training)
    node0 = study.node0.start("dvc", "repro", "-s", "train_cifar10@searched")
    node1 = study.node1.start(sys.executable, "-m", *TRAIN)
    (rc0, out0, err0), (rc1, _, err1) = _finish(node0), _finish(node1)
    assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
    assert "Running stage 'train_cifar10@searched'" in out0
    assert "Running stage 'search@cifar10-0'" not in out0
    assert "all 2 processes end with identical weights" in out0
    ours = study.node0.repo / "outputs/train_cifar10/searched"
    theirs = _reference(study) / "outputs/train_cifar10/searched"
    _tensors_equal(ours / "model.pt", theirs / "model.pt")
    assert (ours / "curves.json").read_text() == (theirs / "curves.json").read_text()
    mine, reference = (json.loads((d / "metrics.json").read_text()) for d in (ours, theirs))
    assert mine["test/top1_err"] == reference["test/top1_err"]
    _wrote_nothing(study.node1, genotype)
    (run,) = _runs(study.node0, "train_cifar10@searched")
    assert run.info.status == "FINISHED" and "test/top1_err" in run.data.metrics


def test_without_restarts_node0_stops_with_one_line_naming_the_lost_node(study: Study) -> None:
    """dist.max_restarts=0: node 1's worker killed mid-search; node 0 stops non-zero with
    one line naming node 1's address and how to resume; no declared output is left, the
    checkpoint to resume from is."""
    for host in (study.node0, study.node1):
        host.compose(*two_nodes())
    node0 = study.node0.start("dvc", "repro", "-f", "-s", "search@cifar10-0")
    node1 = study.node1.start(sys.executable, "-m", *SEARCH)
    _kill_node1_after_first_checkpoint(study, node1)
    (rc0, _, err0), (rc1, _, err1) = _finish(node0), _finish(node1)
    assert rc0 != 0 and rc1 != 0
    stage_line, *dvc_lines = _ours(err0)
    assert stage_line.startswith(f"stages.search cifar10 0: lost the node at {NODE1} mid-stage")
    assert "start the same command again on every node" in stage_line
    assert [line.split(":")[0] for line in dvc_lines] == ["ERROR"], err0  # DVC's own line
    (killed,) = _ours(err1)
    assert killed.startswith("stages.search cifar10 0: this node's process of local rank 0")
    assert "was killed by SIGKILL" in killed
    outs = study.node0.repo / "outputs/search/cifar10/seed_0"
    assert not any((outs / name).exists() for name in (*SEARCH_OUTS, "metrics.json"))
    assert not list(outs.parent.rglob(".*.tmp"))  # nothing half-written either
    assert list((study.node0.repo / ".checkpoints/search-cifar10").glob("*.pt"))
    shutil.rmtree(study.node0.repo / ".checkpoints")  # the later tests start afresh


def test_a_wrong_port_or_a_missing_node_fails_in_the_stated_time_naming_the_endpoint(
    study: Study,
) -> None:
    """Node 1 given a port nobody listens on, and node 0 waiting for a node 1 that never
    comes: each stops with one line naming dist.rdzv_endpoint and the timeout."""
    wrong = f"{NODE0}:{PORT + 1}"
    study.node1.compose(*two_nodes(rdzv_endpoint=wrong, rdzv_connect_timeout_s=CONNECT_TIMEOUT_S))
    study.node0.compose(*two_nodes(rdzv_timeout_s=JOIN_TIMEOUT_S))
    start = time.monotonic()
    node0 = study.node0.start(sys.executable, "-m", *SEARCH)
    node1 = study.node1.start(sys.executable, "-m", *SEARCH)
    (rc1, _, err1) = _finish(node1)
    took1 = time.monotonic() - start
    (rc0, _, err0) = _finish(node0)
    took0 = time.monotonic() - start
    assert rc1 == 1 and _ours(err1) == [
        f"stages.search cifar10 0: dist.rdzv_endpoint = {wrong!r}: nothing answers there"
        f" within dist.rdzv_connect_timeout_s = {CONNECT_TIMEOUT_S} s (Connection refused);"
        " start the stage on node 0 (the machine at that address) first, and give every node"
        " node 0's address and the same free port"
    ], err1
    assert took1 < CONNECT_TIMEOUT_S + STARTUP_S
    (line,) = _ours(err0)
    assert rc0 == 1 and line.startswith(
        f"stages.search cifar10 0: dist.rdzv_endpoint = '{NODE0}:{PORT}': the rendezvous"
        f" failed, not all 2 nodes joined within dist.rdzv_timeout_s = {JOIN_TIMEOUT_S} s"
    ), err0
    assert took0 < JOIN_TIMEOUT_S + STARTUP_S
    assert not (study.node0.repo / "outputs/search/cifar10/seed_0/genotype.json").exists()


def test_nodes_whose_params_differ_refuse_naming_the_first_differing_key(study: Study) -> None:
    study.node0.compose(*two_nodes())
    study.node1.compose(*two_nodes(), "search.cifar10.loop.lr=0.2", "train_cifar10.loop.lr=0.2")
    node0 = study.node0.start(sys.executable, "-m", *SEARCH)
    node1 = study.node1.start(sys.executable, "-m", *SEARCH)
    (rc0, _, err0), (rc1, _, err1) = _finish(node0), _finish(node1)
    says = (
        "stages.search cifar10 0: params.yaml differs between the nodes at"
        f" search.cifar10.loop.lr: 0.1 on rank 0 (at {NODE0}), 0.2 on rank 1 (at {NODE1});"
        " compose it on every node with the same overrides (python -m stages.compose ...) and"
        " start the stage again on every node"
    )
    assert (rc0, _ours(err0)) == (1, [says]), err0
    assert (rc1, _ours(err1)) == (1, [says]), err1
    assert not (study.node0.repo / "outputs/search/cifar10/seed_0/genotype.json").exists()
    assert not (study.node0.repo / ".checkpoints").exists()


def test_nodes_running_different_stages_refuse_naming_both_commands(study: Study) -> None:
    """Node 0 in the search, node 1 in the training (as when node 0's `dvc repro` runs a
    stale upstream stage first): both stop with one line naming both commands, before any
    compute."""
    for host in (study.node0, study.node1):
        host.compose(*two_nodes())
    node0 = study.node0.start(sys.executable, "-m", *SEARCH)
    node1 = study.node1.start(sys.executable, "-m", *TRAIN)
    (rc0, _, err0), (rc1, _, err1) = _finish(node0), _finish(node1)
    says = (
        f"the nodes run different stages: python -m {' '.join(SEARCH)} on rank 0 (at {NODE0}),"
        f" python -m {' '.join(TRAIN)} on rank 1 (at {NODE1}); start the same stage on every"
        " node (on node 0, `dvc repro -s <stage>` runs that stage alone, without the stages"
        " upstream of it)"
    )
    assert (rc0, _ours(err0)) == (1, [f"stages.search cifar10 0: {says}"]), err0
    assert (rc1, _ours(err1)) == (1, [f"stages.train cifar10 searched: {says}"]), err1
    assert not (study.node0.repo / ".checkpoints").exists()
