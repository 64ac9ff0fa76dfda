"""The optional stopping rules (issue 25): every branch on synthetic histories, their params
refused out of range, and a tiny search that DARTS+ stops."""

from __future__ import annotations

import copy
import io
from dataclasses import replace
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import ArchitectConfig, create_model
from pcdarts.config import DartsPlusRule, RobustDartsRule, StoppingConfig
from pcdarts.search import SearchConfig, Searcher
from pcdarts.stopping import Stop, darts_plus, eigenvalues, robust_darts, should_stop
from pipeline.config import PARAMS_FILE, ParamsError, validate

ROBUST = RobustDartsRule(enabled=True, window=2, delta=2, factor=1.3, start_epoch=3)
PLUS = DartsPlusRule(enabled=True, skip_connections=2, start_epoch=2)


def _history(values: list[float | None | str], skips: int = 0) -> list[dict[str, Any]]:
    """One row per epoch: an evaluation per value (None: not evaluated; "nan": NaN)."""
    rows = []
    for epoch, value in enumerate(values):
        row: dict[str, Any] = {
            "epoch": epoch,
            "arch_frozen": False,
            "skip_connections_normal": skips,
        }
        if value == "nan":
            row["hessian"] = {"eigenvalue": None, "status": "nan"}
        elif value is not None:
            row["hessian"] = {"eigenvalue": value, "status": "ok"}
        rows.append(row)
    return rows


def test_robust_darts_stops_when_the_local_average_grows_by_the_factor() -> None:
    # windows of 2 evaluations, 2 evaluations apart: (1 + 1) / 2 then (1.5 + 2) / 2 = 1.75
    stop = robust_darts(_history([1.0, 1.0, 1.0, 1.5, 2.0]), ROBUST)
    assert stop == Stop("robust_darts", 4, stop.reason if stop else "", compared_epoch=2)
    assert stop is not None and "1.75 times" in stop.reason


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ([1.0, 1.0, 1.0, 1.2, 1.3], "grew by less than the factor (1.25 / 1.0)"),
        ([None, 1.0, 1.5, 2.0], "too few evaluations for two windows delta apart"),
        ([1.0, 1.0, 1.0, 1.5, None], "no evaluation at this epoch"),
        ([1.0, 1.0, 1.0, 1.5, "nan"], "a NaN evaluation never stops the search"),
        ([-1.0, -1.0, 1.0, 1.5, 2.0], "no ratio with a non-positive earlier average"),
    ],
)
def test_robust_darts_goes_on(values: list[Any], why: str) -> None:
    assert robust_darts(_history(values), ROBUST) is None, why


def test_robust_darts_leaves_non_finite_evaluations_out_of_the_averages() -> None:
    history = _history([1.0, "nan", 1.0, 1.0, 1.5, 2.0])
    assert eigenvalues(history) == [(0, 1.0), (2, 1.0), (3, 1.0), (4, 1.5), (5, 2.0)]
    stop = robust_darts(history, ROBUST)
    assert stop is not None and stop.epoch == 5 and stop.compared_epoch == 3


def test_robust_darts_waits_for_its_start_epoch_and_the_end_of_the_warm_up() -> None:
    growing = [1.0, 1.0, 1.0, 1.5, 2.0]
    assert robust_darts(_history(growing), replace(ROBUST, start_epoch=5)) is None
    frozen = _history(growing)
    frozen[-1]["arch_frozen"] = True
    assert robust_darts(frozen, ROBUST) is None
    assert robust_darts(_history(growing), replace(ROBUST, enabled=False)) is None
    assert robust_darts([], ROBUST) is None


def test_darts_plus_every_branch() -> None:
    assert darts_plus(_history([None] * 3, skips=1), PLUS) is None  # fewer skips
    stop = darts_plus(_history([None] * 3, skips=2), PLUS)
    assert stop is not None and (stop.rule, stop.epoch) == ("darts_plus", 2)
    assert "2 skip connections" in stop.reason and stop.compared_epoch is None
    assert darts_plus(_history([None] * 2, skips=3), PLUS) is None  # before its start epoch
    frozen = _history([None] * 3, skips=3)
    frozen[-1]["arch_frozen"] = True
    assert darts_plus(frozen, PLUS) is None  # the warm-up's cell is the initial noise
    assert darts_plus(_history([None] * 3, skips=3), replace(PLUS, enabled=False)) is None


def test_should_stop_asks_robust_darts_first_and_defaults_to_never() -> None:
    history = _history([1.0, 1.0, 1.0, 1.5, 2.0], skips=4)
    both = should_stop(history, StoppingConfig(ROBUST, PLUS))
    assert both is not None and both.rule == "robust_darts"
    assert should_stop(history, StoppingConfig()) is None  # the paper's search: no rule


RAW = yaml.safe_load(PARAMS_FILE.read_text())
LOOP = "search.cifar10.loop"


def _with(changes: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (f"{LOOP}.diagnostics.hessian_every", 0, "must be >= 1"),
        (f"{LOOP}.diagnostics.hessian_batch_size", 0, "must be >= 1"),
        (f"{LOOP}.diagnostics.hessian_iterations", 0, "must be >= 1"),
        (f"{LOOP}.diagnostics.hessian_tolerance", 0.0, "must be > 0"),
        (f"{LOOP}.stopping.robust_darts.window", 0, "must be >= 1"),
        (f"{LOOP}.stopping.robust_darts.delta", 0, "must be >= 1"),
        (f"{LOOP}.stopping.robust_darts.factor", 0.9, "must be >= 1"),
        (f"{LOOP}.stopping.robust_darts.start_epoch", -1, "must be >= 0"),
        (f"{LOOP}.stopping.darts_plus.skip_connections", 9, "must lie in [1, 8]"),
        (f"{LOOP}.stopping.darts_plus.start_epoch", -2, "must be >= 0"),
    ],
)
def test_out_of_range_fields_are_refused_naming_the_key(key: str, value: Any, says: str) -> None:
    with pytest.raises(ParamsError) as info:
        validate(_with({key: value}), "params.yaml")
    assert str(info.value).startswith(f"params.yaml: {key} = {value}: {says}")


def test_robust_darts_without_the_eigenvalue_is_refused() -> None:
    with pytest.raises(ParamsError) as info:
        validate(_with({f"{LOOP}.stopping.robust_darts.enabled": True}), "params.yaml")
    assert f"{LOOP}.stopping.robust_darts.enabled = True: needs {LOOP}.diagnostics.hessian" in (
        str(info.value)
    )
    late = {
        f"{LOOP}.stopping.darts_plus.enabled": True,
        f"{LOOP}.stopping.darts_plus.start_epoch": 10,
    }
    with pytest.raises(
        ParamsError, match=rf"{LOOP}.stopping.darts_plus.start_epoch = 10: must be <"
    ):
        validate(_with(late), "params.yaml")
    on = {f"{LOOP}.stopping.robust_darts.enabled": True, f"{LOOP}.diagnostics.hessian": True}
    with pytest.raises(ParamsError, match="robust_darts.start_epoch = 10: must be < .*= 10"):
        validate(_with(on), "params.yaml")  # the tiny search has 10 epochs: never fires
    validate(_with({**on, f"{LOOP}.stopping.robust_darts.start_epoch": 5}), "params.yaml")


CPU = torch.device("cpu")
TINY_SEARCH = SearchConfig(epochs=4, warmup_epochs=1, lr=0.05, architect=ArchitectConfig(lr=0.3))


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)


def _searcher(config: SearchConfig) -> Searcher:
    torch.manual_seed(7)
    model = create_model("pcdarts_supernet_cifar10", C=4, layers=3, num_classes=4, k=2)
    return Searcher(model, config, CPU, show_progress=False)


def _without_stop(row: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in row.items() if k != "stop"}
    kept["metrics"] = {k: v for k, v in row["metrics"].items() if k != "search/stopped_epoch"}
    return kept


def test_darts_plus_stops_a_tiny_search_and_returns_that_epochs_genotype() -> None:
    full = _searcher(TINY_SEARCH).run(_loader(8, 1), _loader(8, 2))
    searched = [row for row in full.history if not row["arch_frozen"]]
    most = max(row["skip_connections_normal"] for row in searched)
    first = next(row["epoch"] for row in searched if row["skip_connections_normal"] == most)
    assert first < TINY_SEARCH.epochs - 1, "the rule must stop before the last epoch"
    rule = DartsPlusRule(enabled=True, skip_connections=most, start_epoch=0)
    config = replace(TINY_SEARCH, stopping=StoppingConfig(darts_plus=rule))
    searcher = _searcher(config)
    checkpoints: list[dict[str, Any]] = []
    stopped = searcher.run(_loader(8, 1), _loader(8, 2), on_checkpoint=checkpoints.append)
    assert len(stopped.history) == first + 1
    assert stopped.stop is not None and stopped.stop["rule"] == "darts_plus"
    assert stopped.stop["epoch"] == first == stopped.history[-1]["stop"]["epoch"]
    assert stopped.history[-1]["metrics"]["search/stopped_epoch"] == first
    assert stopped.genotype.to_dict() == full.history[first]["genotype"]
    # until it stops, the search is the unstopped one, value for value
    assert [_without_stop(r) for r in stopped.history] == full.history[: first + 1]
    # a resumed stopped search stays stopped
    buf = io.BytesIO()
    torch.save(checkpoints[-1], buf)
    buf.seek(0)
    resumed = _searcher(config)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    again = resumed.run(_loader(8, 1), _loader(8, 2))
    assert len(again.history) == first + 1 and again.genotype == stopped.genotype
