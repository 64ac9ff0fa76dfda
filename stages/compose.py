"""Compose params.yaml from conf/ with Hydra: ``python -m stages.compose profile=paper``.

This is what DVC's Hydra integration does on ``dvc exp run -S ...``; ``make params``
calls it for ``dvc repro``. The result is validated against pipeline/config.py.
"""

from __future__ import annotations

import sys

import yaml

from pipeline.compose import compose_params
from pipeline.config import PARAMS_FILE, REPO_ROOT
from pipeline.io import atomic_path
from pipeline.stage import run_stage

__all__ = ["compose_params", "main"]


def main(*overrides: str) -> None:
    raw = compose_params(list(overrides))
    with atomic_path(PARAMS_FILE) as tmp:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    print(f"wrote {PARAMS_FILE.relative_to(REPO_ROOT)} (profile {raw['profile']!r})")


if __name__ == "__main__":
    run_stage(main, *sys.argv[1:])
