"""dvc.yaml says exactly what each stage's code reads and writes, and params.yaml is composed.

For every stage (``foreach`` expanded) this checks, against the stage module its ``cmd``
runs: the Python deps are exactly the repository modules it imports, transitively
(pipeline/dvc_deps.py's rule, which scripts/sync_dvc_deps.py writes); ``params`` are the
module's ``PARAMS`` and all exist in params.yaml; ``outs`` + ``metrics`` + ``plots`` are exactly
the module's ``outs()``; every other dep is written by an upstream stage.
"""

from __future__ import annotations

import importlib
import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.dvc_deps import code_closure
from reporting import memory_k
from stages.compose import compose_params

ROOT = Path(__file__).resolve().parents[1]


def _param(params: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        params = params[part]
    return params


def _interpolate_params(text: str, params: dict[str, Any]) -> str:
    """``${key}`` of params.yaml in a stage (DVC reads params.yaml as its vars)."""
    return re.sub(r"\$\{([a-z_.0-9]+)\}", lambda m: str(_param(params, m.group(1))), text)


def expanded_stages() -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages with ``foreach`` and ``matrix`` expanded as DVC names them."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages: dict[str, dict[str, Any]] = {}
    for name, stage in raw.items():
        if "foreach" in stage:
            for item in stage["foreach"]:
                text = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
                stages[f"{name}@{item}"] = yaml.safe_load(_interpolate_params(text, params))
        elif "matrix" in stage:
            axes = {
                k: _param(params, v[2:-1]) if isinstance(v, str) else v
                for k, v in stage["matrix"].items()
            }
            body = {k: v for k, v in stage.items() if k != "matrix"}
            for combo in itertools.product(*axes.values()):
                text = yaml.safe_dump(body)
                for key, value in zip(axes, combo, strict=True):
                    text = text.replace(f"${{item.{key}}}", str(value))
                text = _interpolate_params(text, params)
                stages[f"{name}@{'-'.join(map(str, combo))}"] = yaml.safe_load(text)
        else:
            stages[name] = stage
    return stages


def _stage_module(stage: dict[str, Any]) -> tuple[Any, list[str]]:
    argv = shlex.split(stage["cmd"])
    assert argv[:2] == ["python", "-m"], stage["cmd"]
    return importlib.import_module(argv[2]), argv[3:]


def _paths(entries: list[Any]) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def _declared_outs(stage: dict[str, Any]) -> set[str]:
    return (
        _paths(stage.get("outs", []))
        | _paths(stage.get("metrics", []))
        | _paths(stage.get("plots", []))
    )


STAGES = expanded_stages()


def test_every_stage_module_is_in_the_pipeline() -> None:
    modules = {_stage_module(s)[0].__name__ for s in STAGES.values()}
    entry_points = {
        f"stages.{p.stem}"
        for p in (ROOT / "stages").glob("*.py")
        if hasattr(importlib.import_module(f"stages.{p.stem}"), "PARAMS")
    }
    assert entry_points <= modules


@pytest.mark.parametrize("name", sorted(STAGES))
def test_python_deps_are_exactly_the_code_the_stage_imports(name: str) -> None:
    stage = STAGES[name]
    module, _ = _stage_module(stage)
    declared = {d for d in stage["deps"] if d.endswith(".py")}
    expected = code_closure(module.__name__)
    assert declared == expected, (
        f"{name}: missing {sorted(expected - declared)}, not imported {sorted(declared - expected)}"
    )


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_the_keys_the_stage_reads(name: str) -> None:
    stage = STAGES[name]
    module, args = _stage_module(stage)
    if hasattr(module, "params"):
        expected = module.params(*args)
    else:
        expected = [key.format(dataset=args[0] if args else "") for key in module.PARAMS]
    assert sorted(stage.get("params", [])) == sorted(expected)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in expected:
        node: Any = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: {key} not in params.yaml"
            node = node[part]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_outs_are_exactly_what_the_stage_writes(name: str) -> None:
    stage = STAGES[name]
    module, args = _stage_module(stage)
    written = {str(p) for p in module.outs(*args).values()}
    assert _declared_outs(stage) == written


@pytest.mark.parametrize("name", sorted(STAGES))
def test_data_deps_come_from_upstream_stages(name: str) -> None:
    produced = {o for other, s in STAGES.items() if other != name for o in _declared_outs(s)}
    for dep in STAGES[name]["deps"]:
        if dep == str(memory_k.MEMORY_K_FILE):  # a committed measurement (make bench-memory)
            assert (ROOT / dep).is_file(), dep
        elif not dep.endswith(".py"):  # an output, inside one, or a folder of outputs
            assert any(
                dep == o or dep.startswith(f"{o}/") or o.startswith(f"{dep}/") for o in produced
            ), dep


def test_metrics_and_plots_are_not_cached_twice() -> None:
    for name, stage in STAGES.items():
        assert not _paths(stage.get("outs", [])) & (
            _paths(stage.get("metrics", [])) | _paths(stage.get("plots", []))
        ), name


def test_committed_params_yaml_is_what_conf_composes() -> None:
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == compose_params([]), "params.yaml is stale: run `make params`"
