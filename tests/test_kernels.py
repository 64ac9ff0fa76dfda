"""CPU kernels pinned before torch loads: the decision, and the real stage processes.

A stage process is watched through a ``sitecustomize`` on ``PYTHONPATH`` that prints, at
exit, the environment and PyTorch's CPU capability of the process that ran the stage (after
any re-execution: ``atexit`` runs only in the last image of the process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_stage_faults import Repo, _copy, _env

from pipeline import kernels
from pipeline.kernels import AVX2, NATIVE, PINNED_ENV

CAN_PIN = kernels.can_pin()
WATCH = f"""
import atexit, json, os, sys
def _report():
    torch = sys.modules.get("torch")
    cap = str(torch.backends.cpu.get_cpu_capability()) if torch else None
    env = {{k: os.environ.get(k) for k in {list(PINNED_ENV)!r}}}
    print("KERNELS " + json.dumps({{"env": env, "capability": cap}}), file=sys.stderr)
atexit.register(_report)
"""


def test_the_environment_is_pinned_only_when_asked_and_possible() -> None:
    env = {"PATH": "/bin"}
    assert kernels.pinned_environment(env, AVX2, pinnable=True) == {**env, **PINNED_ENV}
    assert kernels.pinned_environment(env, NATIVE, pinnable=True) is None
    assert kernels.pinned_environment(env, AVX2, pinnable=False) is None
    assert kernels.pinned_environment({**env, **PINNED_ENV}, AVX2, pinnable=True) is None
    wrong = {**env, **PINNED_ENV, "ATEN_CPU_CAPABILITY": "avx512"}
    assert kernels.pinned_environment(wrong, AVX2, pinnable=True) == {**wrong, **PINNED_ENV}


def test_only_an_x86_64_cpu_with_avx2_can_pin(tmp_path: Path) -> None:
    assert kernels.can_pin("x86_64", avx2=True)
    assert not kernels.can_pin("x86_64", avx2=False)
    assert not kernels.can_pin("aarch64", avx2=True)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    assert kernels.cpu_has_avx2(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2x fma\n")
    assert not kernels.cpu_has_avx2(info)
    assert not kernels.cpu_has_avx2(tmp_path / "absent")


def test_the_setting_is_read_from_params_yaml_without_torch(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("runtime:\n  cpu_kernels: native\n")
    assert kernels.configured(params) == NATIVE
    params.write_text("runtime: [\n")  # broken: the stage's own loading reports it
    assert kernels.configured(params) == AVX2
    assert kernels.configured(tmp_path / "absent.yaml") == AVX2
    done = subprocess.run(
        [sys.executable, "-c", "import sys, pipeline.kernels; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    root = tmp_path_factory.mktemp("kernels")
    _copy(root)
    watch = tmp_path_factory.mktemp("watch")
    (watch / "sitecustomize.py").write_text(WATCH)
    env = _env(root)
    for name in PINNED_ENV:
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(watch), env.get("PYTHONPATH")]))
    return Repo(root, env)


def _kernels_of(repo: Repo, *argv: str) -> dict[str, object]:
    """Run ``python -m <argv>`` (a stage refusing a dataset name: torch loaded, no compute)
    and return what its last process image ran with."""
    done = repo.run(*argv)
    assert done.returncode == 1, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("KERNELS ")]
    found: dict[str, object] = json.loads(line.removeprefix("KERNELS "))
    return found


@pytest.mark.skipif(not CAN_PIN, reason="this CPU has no AVX2 kernels to pin")
def test_a_stage_run_by_hand_re_executes_with_pinned_kernels_before_torch_loads(
    repo: Repo,
) -> None:
    found = _kernels_of(repo, "stages.search", "no_such_dataset", "0")
    assert found == {"env": PINNED_ENV, "capability": "AVX2"}


@pytest.mark.skipif(not CAN_PIN, reason="this CPU has no AVX2 kernels to pin")
def test_native_kernels_leave_the_environment_alone(repo: Repo) -> None:
    good = (repo.root / "params.yaml").read_text()
    repo.set_params(runtime__cpu_kernels=NATIVE)
    try:
        found = _kernels_of(repo, "stages.train", "no_such_dataset", "searched")
    finally:
        (repo.root / "params.yaml").write_text(good)
    assert found["env"] == dict.fromkeys(PINNED_ENV)
    unpinned = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    native = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=unpinned,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found["capability"] == native.stdout.strip()


def test_a_bad_setting_is_refused_naming_the_key(repo: Repo) -> None:
    good = (repo.root / "params.yaml").read_text()
    repo.set_params(runtime__cpu_kernels="avx512")
    try:
        done = repo.run("stages.search", "cifar10", "0")
    finally:
        (repo.root / "params.yaml").write_text(good)
    assert done.returncode == 1
    assert "runtime.cpu_kernels = 'avx512': must be one of 'avx2', 'native'" in done.stderr
