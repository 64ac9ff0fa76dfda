"""Optional stopping rules of the search (issue 25), both off by default: PC-DARTS has none.

Each rule reads the search history as the loop records it (pcdarts.search: one row per
epoch, the last row being the epoch just finished) and says whether to stop after it:

- **RobustDARTS** (DARTS-ES, Zela et al., "Understanding and Robustifying DARTS", ICLR
  2020): the local average of the dominant Hessian eigenvalue (the mean of the last
  ``window`` evaluations) exceeds ``factor`` times the local average ``delta`` evaluations
  earlier. Only finite evaluations count, so a NaN or inf evaluation never stops a search
  by itself, and a stop needs a finite evaluation at the epoch that stops.
- **DARTS+** (criterion 1 of Liang et al., "DARTS+: Improved Differentiable Architecture
  Search with Early Stopping", 2019): the normal cell holds ``skip_connections`` skip
  connections or more.

Neither stops before its ``start_epoch``, nor in the weight-only warm-up (the alphas are
frozen there, so the cell is the initial noise's). The search stops after the epoch a rule
names and returns that epoch's genotype; DARTS-ES as published returns the genotype of the
earlier epoch it compared with, which the history holds (``Stop.compared_epoch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pcdarts.config import DartsPlusRule, RobustDartsRule, StoppingConfig

Row = Mapping[str, Any]  # one epoch of the search history


@dataclass(frozen=True)
class Stop:
    """Which rule stopped the search, after which epoch, and why (a plain sentence)."""

    rule: str  # "robust_darts" or "darts_plus"
    epoch: int  # the last epoch searched; its genotype is the result
    reason: str
    compared_epoch: int | None = None  # RobustDARTS: the epoch of the earlier local average

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _may_stop(row: Row, start_epoch: int) -> bool:
    return int(row["epoch"]) >= start_epoch and not row.get("arch_frozen", False)


def eigenvalues(history: Sequence[Row]) -> list[tuple[int, float]]:
    """(epoch, eigenvalue) of every finite Hessian evaluation in ``history``."""
    found = []
    for row in history:
        value = (row.get("hessian") or {}).get("eigenvalue")
        if value is not None:
            found.append((int(row["epoch"]), float(value)))
    return found


def robust_darts(history: Sequence[Row], rule: RobustDartsRule) -> Stop | None:
    """The DARTS-ES test after ``history[-1]``; None: go on."""
    if not rule.enabled or not history or not _may_stop(history[-1], rule.start_epoch):
        return None
    values = eigenvalues(history)
    if not values or values[-1][0] != int(history[-1]["epoch"]):
        return None  # no finite evaluation at this epoch
    if len(values) < rule.window + rule.delta:
        return None
    now = [v for _, v in values[-rule.window :]]
    then = [v for _, v in values[-rule.window - rule.delta : -rule.delta]]
    average_now, average_then = sum(now) / len(now), sum(then) / len(then)
    if average_then <= 0 or average_now <= rule.factor * average_then:
        return None  # a ratio of averages of opposite or no sign says nothing
    epoch, compared = values[-1][0], values[-rule.delta - 1][0]
    reason = (
        f"the dominant eigenvalue's average over the last {rule.window} evaluations, "
        f"{average_now:.4g}, is {average_now / average_then:.2f} times its average "
        f"{rule.delta} evaluations earlier ({average_then:.4g}, up to epoch {compared}), "
        f"more than {rule.factor}"
    )
    return Stop("robust_darts", epoch, reason, compared)


def darts_plus(history: Sequence[Row], rule: DartsPlusRule) -> Stop | None:
    """The DARTS+ test after ``history[-1]``; None: go on."""
    if not rule.enabled or not history or not _may_stop(history[-1], rule.start_epoch):
        return None
    row = history[-1]
    skips = int(row["skip_connections_normal"])
    if skips < rule.skip_connections:
        return None
    reason = f"the normal cell holds {skips} skip connections, at least {rule.skip_connections}"
    return Stop("darts_plus", int(row["epoch"]), reason)


def should_stop(history: Sequence[Row], config: StoppingConfig) -> Stop | None:
    """The first rule of ``config`` that stops after ``history[-1]`` (RobustDARTS first)."""
    return robust_darts(history, config.robust_darts) or darts_plus(history, config.darts_plus)
