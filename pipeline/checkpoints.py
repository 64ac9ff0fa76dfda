"""Resumable in-progress checkpoints of the long stages, keyed by their resolved config."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pcdarts.distributed import broadcast_object, is_main
from pipeline.config import REPO_ROOT
from pipeline.io import save_torch, to_jsonable

CHECKPOINT_DIR = REPO_ROOT / ".checkpoints"  # in-progress states; git-ignored, not DVC outputs
CORRUPT_SUFFIX = ".corrupt"  # an unreadable checkpoint is renamed <name>.corrupt-<n>


def config_hash(config: Any) -> str:
    """A short, stable hash of a config tree (dataclasses or dicts)."""
    text = json.dumps(to_jsonable(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Resumable:
    """In-progress checkpoints of a long stage, keyed by its resolved config.

    DVC deletes a stage's outputs before running it, so progress is kept outside them,
    in ``.checkpoints/<name>/<config hash>.pt``: an interrupted stage rerun with the same
    config resumes from its last epoch; a changed config starts afresh.
    """

    def __init__(self, name: str, config: Any) -> None:
        self.path = CHECKPOINT_DIR / name / f"{config_hash(config)}.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None: nothing saved, or a file that cannot be read (truncated,
        not a checkpoint), which is renamed ``<name>.corrupt-<n>`` with a warning.

        Under torchrun rank 0 reads it and every rank gets rank 0's state, so the nodes of a
        multi-node run resume together from the one node that writes checkpoints."""
        return broadcast_object(self._read() if is_main() else None)

    def _read(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict):
                raise TypeError(f"holds a {type(state).__name__}, not a checkpoint dict")
        except Exception as error:  # torch.load raises many types for a damaged file
            aside = self._set_aside()
            warnings.warn(
                f"checkpoint {self.path} cannot be loaded ({str(error)[:200]}); moved to "
                f"{aside.name}, starting afresh",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        return state

    def _set_aside(self) -> Path:
        n = 1
        while (aside := self.path.with_name(f"{self.path.name}{CORRUPT_SUFFIX}-{n}")).exists():
            n += 1
        self.path.rename(aside)
        return aside

    def saver(self) -> Callable[[dict[str, Any]], None]:
        return lambda state: save_torch(self.path, state)

    def done(self) -> None:
        if is_main():
            self.path.unlink(missing_ok=True)
