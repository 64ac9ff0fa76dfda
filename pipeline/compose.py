"""params.yaml's tree composed from conf/ with Hydra and checked against the schema: what
``python -m stages.compose`` writes (``make params``) and what a dry run composes into its
scratch space (``pipeline/dry_run.py``)."""

from __future__ import annotations

from typing import Any, cast

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config import CONF_DIR, validate


def compose_params(overrides: list[str] | None = None) -> dict[str, Any]:
    """conf/config.yaml with ``overrides`` (``profile=paper``, ``seed=1``, ...), validated."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides or [])
    raw = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(raw, dict)
    validate(raw, f"conf/ with overrides {overrides or []}")
    return raw
