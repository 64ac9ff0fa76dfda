"""params.yaml's tree composed from conf/ with Hydra and checked against the schema: what
``python -m stages.compose`` writes (``make params``) and what a dry run composes into its
scratch space (``pipeline/dry_run.py``)."""

from __future__ import annotations

from typing import Any, cast

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import CONF_DIR, ParamsError, schema_mismatch, validate

PROFILE_GROUP = "profile"  # conf/profile/<name>.yaml, chosen by `profile=<name>`


def compose_params(overrides: list[str] | None = None) -> dict[str, Any]:
    """conf/ composed with ``overrides`` and validated; ParamsError, one line naming the
    override's key, for anything Hydra or the schema refuses."""
    overrides = overrides or []
    source = f"conf/ with overrides {overrides}"
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        raw = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    except (HydraException, OmegaConfBaseException) as error:
        raise ParamsError(f"{source}: {_refused(error, overrides)}") from None
    assert isinstance(raw, dict)
    validate(raw, source)
    return raw


def _refused(error: Exception, overrides: list[str]) -> str:
    """Why Hydra refused ``overrides``: the schema's message for the key when its error names
    one (a key the schema lacks, a value of the wrong type), else Hydra's text on one line."""
    cause: BaseException | None = error
    while cause is not None and not getattr(cause, "full_key", None):
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException):  # the overrides parsed: a key refused them
        parsed = OverridesParser.create().parse_overrides(overrides)
        given = {o.key_or_group: o.value() for o in parsed}
        profile = str(given.get(PROFILE_GROUP, _default_profile()))
        return schema_mismatch(cause, given, profile)
    text = str(error).split("Config search path:")[0]  # Hydra's search path: not the user's
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _default_profile() -> str:
    """conf/config.yaml's default profile."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))
    entries = cast(dict[str, Any], defaults).get("defaults", [])
    return next(
        (e[PROFILE_GROUP] for e in entries if isinstance(e, dict) and PROFILE_GROUP in e), ""
    )
