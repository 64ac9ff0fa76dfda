"""The typed schema is the config's base: DVC's own composition (`dvc exp run -S`) starts
from it, so every field takes ``-S key=value``, also one that conf/ never sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Params
from pipeline.param_rules import leaves

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"profile"}  # a config group: `-S profile=paper` picks conf/profile/paper.yaml

# What `dvc exp run -S` runs (dvc/repo/experiments/queue/base.py): DVC's compose_and_dump
# with .dvc/config's hydra settings (config_dir conf/, config_name config, plugins_path the
# repo root), in a fresh process that has imported nothing of ours.
DVC_COMPOSE = """
import json, sys
from dvc.utils.hydra import compose_and_dump
root, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
compose_and_dump(out, f"{root}/conf", None, "config", root, overrides)
"""


def _changed(value: Any) -> tuple[str, Any]:
    """An override text for a leaf, and the value it must compose to (another valid type)."""
    if isinstance(value, bool):
        return str(not value).lower(), not value
    if isinstance(value, int):
        return str(value + 1), value + 1
    if isinstance(value, float):
        return repr(value / 2 + 0.25), value / 2 + 0.25
    if value is None:  # Optional[float]: the architect's grad clip
        return "1.5", 1.5
    if isinstance(value, str):
        return f"'{value}x'", f"{value}x"
    if isinstance(value, list | tuple):
        new = [*value, "random:9"] if all(isinstance(v, str) for v in value) and value else None
        if new is None:
            new = [0.25, 0.5] if any(isinstance(v, float) for v in value) else [5, 6]
        text = ",".join(f"'{v}'" if isinstance(v, str) else repr(v) for v in new)
        return f"[{text}]", new
    raise TypeError(f"no override for {value!r}")


def _compose_like_dvc(tmp_path: Path, overrides: list[str]) -> dict[str, Any]:
    out = tmp_path / "params.yaml"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-c", DVC_COMPOSE, str(ROOT), str(out), json.dumps(overrides)],
        cwd=tmp_path,
        env=env,
        check=True,
    )
    return yaml.safe_load(out.read_text())


def _get(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_every_schema_leaf_takes_an_override_through_dvcs_composition(tmp_path: Path) -> None:
    expected: dict[str, Any] = {}
    overrides = []
    for key, value in leaves(Params()):
        if key in GROUPS:
            continue
        text, expected[key] = _changed(value)
        overrides.append(f"{key}={text}")
    composed = _compose_like_dvc(tmp_path, overrides)
    wrong = {k: _get(composed, k) for k, v in expected.items() if _get(composed, k) != v}
    assert wrong == {}
    assert "search.cifar10.loop.sync_bn=true" in overrides  # a field conf/ never sets


def test_dvcs_composition_gives_the_committed_params(tmp_path: Path) -> None:
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert _compose_like_dvc(tmp_path, []) == committed
    paper = _compose_like_dvc(tmp_path, ["profile=paper"])
    assert paper["profile"] == "paper" and paper["data"]["source"] == "real"


def test_the_schema_embeds_the_librarys_model_options() -> None:
    """One home per field: ``search.<ds>.network`` is the library's SupernetOptions and
    ``train_<ds>.network`` its NetworkOptions, the bases of the models' configs, so a field
    added there reaches params.yaml and the model with no copy in between."""
    from dataclasses import fields
    from typing import get_type_hints

    from pcdarts.config import NetworkOptions, SupernetOptions
    from pcdarts.network import NetworkConfig
    from pcdarts.supernet import SupernetConfig
    from pipeline.config import DeriveParams, SearchParams, TrainParams

    assert get_type_hints(SearchParams)["network"] is SupernetOptions
    assert get_type_hints(TrainParams)["network"] is NetworkOptions
    assert {get_type_hints(DeriveParams)[f] for f in ("cifar_network", "imagenet_network")} == {
        NetworkOptions
    }
    assert issubclass(SupernetConfig, SupernetOptions)
    assert issubclass(NetworkConfig, NetworkOptions)
    assert [f.name for f in fields(SupernetOptions)] == ["C", "layers", "k", "edge_norm"]
