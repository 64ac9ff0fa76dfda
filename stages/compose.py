"""Compose params.yaml from conf/ with Hydra: ``python -m stages.compose profile=paper``.

This is what DVC's Hydra integration does on ``dvc exp run -S ...``; ``make params``
calls it for ``dvc repro``. The result is validated against pipeline/config.py.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config import CONF_DIR, PARAMS_FILE, REPO_ROOT, validate
from pipeline.io import atomic_path
from pipeline.stage import run_stage


def compose_params(overrides: list[str] | None = None) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides or [])
    raw = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(raw, dict)
    validate(raw, f"conf/ with overrides {overrides or []}")
    return raw


def main(*overrides: str) -> None:
    raw = compose_params(list(overrides))
    with atomic_path(PARAMS_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    print(f"wrote {PARAMS_FILE.relative_to(REPO_ROOT)} (profile {raw['profile']!r})")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:])
