"""PyTorch's CPU kernels pinned to their AVX2 code paths, so that every x86-64 machine with
AVX2 computes the tiny study's bits, and one reference run (expected/tiny.json) holds on all.

PyTorch picks its vectorised CPU code at run time from the CPU: an AVX-512 machine runs
other kernels than an AVX2 one, which round differently, and the tiny search turns any
rounding difference into other cells (docs/reproducibility.md). The variables below make it
run the AVX2 code everywhere. They are read when a library loads, so they must be in the
process's environment before ``import torch``: :func:`pin_this_stage` (called by
``stages/__init__.py`` before a stage module imports anything) re-executes
``python -m stages.<name> ...`` with them when they are missing. That covers ``make repro``,
``dvc repro``, ``dvc exp run`` and a stage run by hand; torchrun's children inherit them
from the stage process that started torchrun.

``runtime.cpu_kernels`` in params.yaml chooses: ``avx2`` (the default) pins them, ``native``
leaves the environment as it is (the machine's fastest kernels; results then depend on the
CPU). This module imports no torch at load time.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

AVX2, NATIVE = "avx2", "native"
CPU_KERNELS = (AVX2, NATIVE)  # the values of runtime.cpu_kernels

# The smallest set that gives equality, measured 2026-12-05 on an AMD EPYC (Zen 4,
# AVX-512): a supernet, the final networks and their SGD/Adam steps, hashed bit for bit
# under every subset of the four candidate variables. Each of the first two alone changes
# the bits; MKL_CBWR changed none of them (and changes LAPACK results, which no stage uses).
PINNED_ENV: dict[str, str] = {
    # ATen's own vectorised kernels (element-wise ops, reductions, softmax, batch norm,
    # pooling, the optimisers' updates): without it an AVX-512 CPU runs their AVX-512 build.
    "ATEN_CPU_CAPABILITY": "avx2",
    # oneDNN, PyTorch's CPU convolutions: its JIT emits AVX-512 code wherever the CPU has it.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # MKL's BLAS (linear layers). MKL picks AVX-512 code on Intel CPUs only; on the AMD
    # machine measured it changed no bit. Kept so an Intel AVX-512 machine cannot differ here.
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
X86_64 = ("x86_64", "AMD64")
PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has AVX2 (Linux; elsewhere: unknown, taken as no)."""
    try:
        return any(
            line.startswith("flags") and "avx2" in line.split()
            for line in cpuinfo.read_text().splitlines()
        )
    except OSError:
        return False


def can_pin(machine: str | None = None, avx2: bool | None = None) -> bool:
    """AVX2 kernels exist only on an x86-64 CPU with AVX2."""
    machine = platform.machine() if machine is None else machine
    return machine in X86_64 and (cpu_has_avx2() if avx2 is None else avx2)


def is_pinned(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return all(environ.get(k) == v for k, v in PINNED_ENV.items())


def configured(params_file: Path = PARAMS_FILE) -> str:
    """``runtime.cpu_kernels`` of params.yaml; ``avx2`` when it is unset or unreadable (a
    broken params.yaml is reported by the stage's own loading, with the key's name)."""
    try:
        raw = yaml.safe_load(params_file.read_text())
        value = raw["runtime"]["cpu_kernels"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return AVX2
    return value if value in CPU_KERNELS else AVX2


def pinned_environment(
    environ: Mapping[str, str], setting: str, pinnable: bool
) -> dict[str, str] | None:
    """The environment to re-execute with, or None when this one is already right."""
    if setting != AVX2 or not pinnable or is_pinned(environ):
        return None
    return {**environ, **PINNED_ENV}


def pin_this_stage() -> None:
    """Re-execute this ``python -m stages.<name> ...`` process with :data:`PINNED_ENV` when
    params.yaml asks for AVX2 kernels, the CPU has them and the environment lacks them.

    Only for a stage run as a module (``sys.orig_argv`` holds ``-m stages.<name>``): an
    import from tests or a notebook is left alone. The same interpreter, flags and
    arguments run again, so the process id, stdin/stdout and the exit status are torchrun's
    and DVC's as before.
    """
    argv = sys.orig_argv
    try:
        module = argv[argv.index("-m") + 1]
    except (ValueError, IndexError):
        return
    if not module.startswith("stages."):
        return
    env = pinned_environment(os.environ, configured(), can_pin())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def record(setting: str) -> dict[str, Any]:
    """What this process's CPU kernels are, for metrics and MLflow: ``cpu_kernels`` is
    ``avx2`` when pinned, else ``native``; ``cpu_capability`` is what PyTorch runs."""
    import torch  # noqa: PLC0415 - this module must load without torch

    return {
        "cpu_kernels": AVX2 if is_pinned() else NATIVE,
        "configured": setting,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": platform.machine(),
        "cpu_has_avx2": can_pin(),
    }
