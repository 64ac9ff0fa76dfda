"""Faults a user meets: a bad input is one line and exit 1, a killed writer leaves the old
or the new file, a truncated checkpoint is set aside, a tracking store that dies mid-run
loses no output. The stage-level versions, against the real commands, are in
tests/test_stage_faults.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mlflow
import pytest
import torch
from test_mlflow_server import mlflow_server

import pipeline.checkpoints as checkpoint_store
import pipeline.stage as common
from pcdarts.data.splits import indices_from_json
from pcdarts.errors import MissingInputError, UserError
from pipeline.checkpoints import Resumable
from pipeline.io import (
    atomic_path,
    read_json,
    read_torch,
    save_torch,
    write_curves,
    write_json,
)
from pipeline.stage import int_argument, run_stage, usage
from pipeline.tracking import stage_run
from stages.compose import main as compose_main
from stages.search import main as search_main

ROOT = Path(__file__).resolve().parents[1]


def _fails(dataset: str) -> None:
    raise UserError(f"search.{dataset}.loop.lr = -0.1: must be > 0")


def _bug() -> None:
    raise KeyError("a bug")


def test_curves_have_every_key_in_every_row_for_dvc_plots(tmp_path: Path) -> None:
    rows = [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.5, "val/ap": 0.1}]
    write_curves(tmp_path / "curves.json", rows)
    assert json.loads((tmp_path / "curves.json").read_text()) == [
        {"epoch": 0, "loss": 2.0, "val/ap": None},  # no evaluation that epoch
        {"epoch": 1, "loss": 1.5, "val/ap": 0.1},
    ]


def test_run_stage_turns_a_user_error_into_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(common.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(_fails, "cifar10")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == f"{__name__} cifar10: search.cifar10.loop.lr = -0.1: must be > 0\n", err
    with pytest.raises(KeyError):  # not a UserError: a bug keeps its traceback
        run_stage(_bug)
    monkeypatch.setenv(common.DEBUG_ENV, "1")
    with pytest.raises(UserError, match="must be > 0"):  # the debug switch: the traceback
        run_stage(_fails, "cifar10")


def test_a_user_error_message_on_several_lines_is_still_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(common.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit):
        run_stage(_fails, "two\nlines")
    assert capsys.readouterr().err.count("\n") == 1


def _search(dataset: str, seed: str, k: str | None = None) -> None:
    """A stage's main with the search stage's arguments."""
    int_argument(seed, "seed")


def test_arguments_that_do_not_fit_a_stage_give_its_usage_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(common.DEBUG_ENV, raising=False)
    usage = f"usage: python -m {__name__} <dataset> <seed> [<k>]"
    for args, problem in (
        (("cifar10",), "missing a required argument: 'seed'"),
        (("cifar10", "0", "4", "5"), "too many positional arguments"),
        (("cifar10", "x"), "<seed> must be an integer, not 'x'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_stage(_search, *args)
        assert exit_info.value.code == 1
        assert capsys.readouterr().err == f"{' '.join([__name__, *args])}: {problem}; {usage}\n"
    run_stage(_search, "cifar10", "0", "4")  # fits: no usage, no exit


def test_the_usage_line_shows_the_stage_docstrings_example() -> None:
    assert usage(search_main) == (
        "usage: python -m stages.search <dataset> <seed> [<k>] "
        "(e.g. python -m stages.search cifar10 0)"
    )
    assert usage(compose_main) == "usage: python -m stages.compose [<overrides> ...]"


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(checkpoint_store, "CHECKPOINT_DIR", tmp_path / ".checkpoints")
    return tmp_path / ".checkpoints"


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "not a dict"])
def test_a_damaged_checkpoint_is_set_aside_with_a_warning_and_never_loaded(
    checkpoints: Path, damage: str
) -> None:
    progress = Resumable("search-cifar10", {"lr": 0.1})
    progress.saver()({"epoch": 3, "weights": torch.arange(100_000.0)})
    assert progress.load() is not None
    data = progress.path.read_bytes()
    content = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "text": b"not a checkpoint\n",
        "not a dict": b"",
    }[damage]
    if damage == "not a dict":
        torch.save([1, 2, 3], progress.path)
    else:
        progress.path.write_bytes(content)
    with pytest.warns(RuntimeWarning, match=f"checkpoint {progress.path} cannot be loaded"):
        assert progress.load() is None
    assert not progress.path.exists()
    assert (progress.path.parent / f"{progress.path.name}.corrupt-1").exists()
    progress.path.write_bytes(b"again")
    with pytest.warns(RuntimeWarning, match="corrupt-2"):
        assert progress.load() is None
    assert progress.load() is None  # nothing left: a fresh start, no warning


WRITER = """
import sys, torch
from pathlib import Path
from pipeline.io import save_torch
target = Path(sys.argv[1])
for step in range(10**9):
    save_torch(target, {"step": step, "blob": torch.full((2_000_000,), float(step))})
    print(step, flush=True)
"""


def _kill_during_a_write(target: Path) -> bool:
    """Start a writer, SIGKILL it while a temporary is being written; True if one was left."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "0"  # one checkpoint written
    deadline = time.monotonic() + KILL_WINDOW_S
    while time.monotonic() < deadline:
        if any(_size(p) for p in target.parent.glob(".*.tmp")):
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    return any(target.parent.glob(".*.tmp"))


def _size(path: Path) -> int:
    """The file's size, or 0 once the writer has renamed it into place (listed, then gone)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


KILL_WINDOW_S = 10  # a write of the 8 MB blob takes milliseconds; the loop always writes


@pytest.mark.slow  # three writer processes, each importing torch and mlflow: ~40 s on 2 busy cores
def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    left = []
    for _ in range(3):
        left.append(_kill_during_a_write(target))
        state = torch.load(target, weights_only=False)  # never half a file
        assert torch.equal(state["blob"], torch.full((2_000_000,), float(state["step"])))
    assert any(left), "no kill landed inside a write"
    save_torch(target, {"step": -1})  # the next writer clears what the killed ones left
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_atomic_path_keeps_the_old_file_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text('{"old": 1}')
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"new"')
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.slow  # starts a real mlflow server (~30 s on 2 busy cores)
def test_a_tracking_server_that_dies_mid_run_loses_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's default: ~4 min
    metrics, run_file = tmp_path / "outputs/metrics.json", tmp_path / "outputs/mlflow_run.json"
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as url:
        run = stage_run(
            "search",
            params={"lr": 0.1},
            profile="tiny",
            seed=0,
            repo_root=tmp_path,
            tracking_uri=url,
            experiment="dies",
            run_file=run_file,
        )
        tracker = run.__enter__()
        tracker.log_metrics({"train/loss": 1.0}, step=0)
        assert tracker.ok
    # the server is gone (127.0.0.1, nothing listens any more); the stage goes on
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_metrics({"train/loss": 0.5}, step=1)
        tracker.log_summary({"test/top1_err": 3.0})
        write_json(metrics, {"test/top1_err": 3.0})  # the stage's DVC output
        run.__exit__(None, None, None)
    disabled = [w for w in caught if "tracking disabled" in str(w.message)]
    assert len(disabled) == 1, [str(w.message) for w in caught]
    assert not tracker.ok and mlflow.active_run() is None
    assert json.loads(metrics.read_text()) == {"test/top1_err": 3.0}
    info = json.loads(run_file.read_text())
    assert info["tracking_ok"] is False and info["tracking_uri"] == url


def test_a_damaged_upstream_checkpoint_is_a_user_error_naming_it_and_the_stage(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model.pt"
    with pytest.raises(MissingInputError, match=f"^{model} is missing: .*dvc repro train_imag"):
        read_torch(model, "train_imagenet@searched")
    torch.save({"model": {"w": torch.arange(100_000.0)}}, model)
    assert set(read_torch(model, "train_imagenet@searched")) == {"model"}
    data = model.read_bytes()
    for content, problem in (
        (data[: len(data) // 2], "PytorchStreamReader failed"),
        (b"not a checkpoint", "Weights only load failed"),
        (data, "KeyError"),  # loads, but lacks what parse reads
    ):
        model.write_bytes(content)
        with pytest.raises(UserError) as info:
            read_torch(model, "train_imagenet@searched", lambda obj: obj["genotype"])
        message = str(info.value)
        assert message.startswith(f"{model} is damaged, not a valid output of train_imagenet@"), (
            message
        )
        assert problem in message and "\n" not in message, message
        assert message.endswith("rebuild it (dvc repro -f train_imagenet@searched)"), message


def test_a_damaged_upstream_file_is_a_user_error_naming_it_and_the_stage(tmp_path: Path) -> None:
    split = tmp_path / "splits/cifar10.json"
    with pytest.raises(MissingInputError, match=f"{split} is missing: .*dvc repro prepare"):
        read_json(split, "prepare", indices_from_json)
    split.parent.mkdir()
    for text, problem in (('{"weight": [1, 2', "JSONDecodeError"), ('{"weight": [1]}', "'arch'")):
        split.write_text(text)
        with pytest.raises(
            UserError, match=f"^{split} is damaged, not a valid output of prepare .*{problem}"
        ):
            read_json(split, "prepare", indices_from_json)
