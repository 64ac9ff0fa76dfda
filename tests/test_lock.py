"""requirements.lock pins what pyproject.toml asks for, and `make venv` installs from it.

The lock is written by `make lock` (uv); these checks catch a pyproject.toml edited
without re-locking, a lock edited by hand, and a Makefile that stops installing from it.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# Built on each machine into the wheel cache (scripts/build_mmcv_wheel.sh): its hash is that
# machine's, so it stays out of the hashed lock and installs with --no-deps.
UNLOCKED = {"mmcv"}


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _lock() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes), from the lock's `name==version \\` blocks."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            name = canonicalize_name(m[1])
            assert name not in pins, f"{name} pinned twice"
            pins[name] = (Version(m[2]), [])
        elif m := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            pins[name][1].append(m[1])
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"unexpected line in requirements.lock: {line!r}")
    return pins


def test_every_direct_dependency_is_pinned_within_its_specifier() -> None:
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in UNLOCKED:
            continue
        assert name in pins, f"{req} (pyproject.toml) is not in requirements.lock: run make lock"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {req}: "
            "run make lock"
        )


def test_every_pin_is_exact_and_hashed() -> None:
    pins = _lock()
    assert len(pins) > 100, "the lock should hold the whole transitive closure"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash in requirements.lock"
    for name in UNLOCKED:
        assert name not in pins, f"{name} is built per machine: keep it out of the lock"


@pytest.mark.parametrize(("name", "version"), [("torch", "2.14.1"), ("torchvision", "0.29.1")])
def test_torch_pins(name: str, version: str) -> None:
    assert _lock()[name][0] == Version(version)
    assert f'"{name}=={version}"' in (ROOT / "pyproject.toml").read_text()


def test_makefile_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp, "no $(STAMP) rule in the Makefile"
    prerequisites, recipe = stamp[1].split(), stamp[2]
    assert "requirements.lock" in prerequisites
    assert "--require-hashes -r requirements.lock" in recipe
    # Everything else without dependencies, so nothing unlocked slips in; then pip check.
    for line in recipe.splitlines():
        if "pip install" in line and "requirements.lock" not in line and "pip==" not in line:
            assert "--no-deps" in line, line
    assert "pip check" in recipe
    # The wheel the Makefile installs is the mmcv that pyproject.toml pins.
    mmcv = next(r for r in _requirements() if r.name == "mmcv")
    wheel = re.search(r"^MMCV_WHEEL := .*/mmcv-([0-9.]+)-", makefile, re.M)
    assert wheel and str(mmcv.specifier) == f"=={wheel[1]}", (mmcv, wheel)


@pytest.mark.parametrize(("needed_gb", "ok"), [("0", True), ("1000000", False)])
def test_disk_check_refuses_a_new_venv_that_cannot_fit(needed_gb: str, ok: bool) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_disk.sh"), str(ROOT), needed_gb],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode == 0) == ok
    if not ok:  # one line: where, what is free, what is needed, what to do
        (line,) = done.stderr.splitlines()
        assert "GiB free on /" in line and f"needs about {needed_gb} GiB" in line
        assert "VENV_GB" in line


def test_makefile_checks_the_disk_before_a_new_venv() -> None:
    recipe = (ROOT / "Makefile").read_text()
    check, create = recipe.index("scripts/check_disk.sh"), recipe.index("-m venv $(VENV)")
    assert check < create
