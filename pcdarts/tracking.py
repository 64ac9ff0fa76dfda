"""How results leave the loops: a tracker interface (MLflow behind it, in pipeline/tracking.py).

The loops call ``log_metrics`` with namespaced names (``train/loss``, ``val/top1_err``,
``search/alpha_entropy``) and ``log_record`` with structured per-epoch data (the
current genotype, softmaxed alphas). They never write files or import a tracking SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Tracker(Protocol):
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars for one step (the epoch index in the loops)."""

    def log_record(self, name: str, record: Mapping[str, Any], step: int) -> None:
        """A JSON-serialisable structure for one step (e.g. the genotype of an epoch)."""


class NullTracker:
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_record(self, name: str, record: Mapping[str, Any], step: int) -> None:
        pass


@dataclass
class MemoryTracker:
    """Keeps everything in lists; for tests and notebooks."""

    metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    records: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_record(self, name: str, record: Mapping[str, Any], step: int) -> None:
        self.records.append((step, name, dict(record)))

    def metric_names(self) -> set[str]:
        return {name for _, m in self.metrics for name in m}

    def series(self, name: str) -> list[float]:
        return [m[name] for _, m in self.metrics if name in m]
