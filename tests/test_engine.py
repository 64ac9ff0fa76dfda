"""The search and training loops: warm-up gating, exact resume, NaN guard, metrics."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import ArchitectConfig, create_model, get_genotype
from pcdarts.metrics import topk_errors
from pcdarts.runtime import NonFiniteLossError
from pcdarts.search import SearchConfig, Searcher
from pcdarts.tracking import MemoryTracker
from pcdarts.train import TrainConfig, Trainer

CPU = torch.device("cpu")
TINY_SEARCH = SearchConfig(epochs=3, warmup_epochs=1, lr=0.05, architect=ArchitectConfig(lr=3e-3))
TINY_TRAIN = TrainConfig(epochs=2, lr=0.05, drop_path_prob=0.2)


def _loader(n: int, seed: int, size: int = 8, classes: int = 4, batch: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def _supernet() -> Any:
    return create_model("pcdarts_supernet_cifar10", C=4, layers=3, num_classes=4, k=2)


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """What a stage does with a checkpoint: torch.save to disk, torch.load back."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_warmup_gating_and_metrics() -> None:
    torch.manual_seed(0)
    model = _supernet()
    alphas0 = [p.detach().clone() for p in model.arch_parameters()]
    tracker = MemoryTracker()
    searcher = Searcher(model, replace(TINY_SEARCH, epochs=2), CPU, tracker, show_progress=False)
    snapshots = []
    result = searcher.run(
        _loader(16, 1),
        _loader(16, 2),
        on_checkpoint=lambda s: snapshots.append(
            [v.clone() for k, v in s["model"].items() if "alphas" in k or "betas" in k]
        ),
    )
    # epoch 0 is warm-up: arch untouched; epoch 1 searches: every arch tensor moved
    assert all(torch.equal(a, b) for a, b in zip(alphas0, snapshots[0], strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1], strict=True))
    names = tracker.metric_names()
    for name in (
        "train/loss",
        "train/top1_err",
        "arch/loss",
        "arch/top1_err",
        "search/alpha_entropy",
        "search/genotype_changed",
        "search/alpha_entropy_normalised",
        "search/derivation_margin",
        "search/stable_since_epoch",
        "lr",
        "arch/step_loss",
    ):
        assert name in names, name
    # per epoch: the metrics, then the alpha and edge-weight trajectories (issue 25)
    assert [step for step, m in tracker.metrics if "train/loss" in m] == [0, 1]
    assert [step for step, m in tracker.metrics if "alpha/normal/node0_in0/none" in m] == [0, 1]
    assert {name for _, name, _ in tracker.records} == {"search/epoch"}
    record = result.history[-1]
    assert len(record["alphas_normal"]) == 14 and len(record["betas_normal"]) == 14
    assert result.genotype.to_dict() == record["genotype"]
    # the decision metrics: the model's own margin, and the epoch the genotype last changed
    assert record["derivation_margin"] == pytest.approx(model.derivation_margin())
    last = result.history[-1]["metrics"]
    changed = [h["epoch"] for h in result.history if h["genotype_changed"]]
    assert last["search/stable_since_epoch"] == (changed[-1] if changed else 0)
    assert 0 < last["search/alpha_entropy_normalised"] < 1
    assert result.cost.device_type == "cpu" and "cost/device_days" in result.metrics


def test_search_resume_is_exact() -> None:
    def fresh(seed: int) -> Searcher:
        torch.manual_seed(seed)
        return Searcher(_supernet(), TINY_SEARCH, CPU, show_progress=False)

    torch.manual_seed(123)
    full = fresh(123)
    result_full = full.run(_loader(16, 1), _loader(16, 2))

    torch.manual_seed(123)
    interrupted = fresh(123)
    saved: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def checkpoint(state: dict[str, Any]) -> None:
        saved.append(_roundtrip(state))
        if state["epoch"] == 2:  # stop after epoch 1, the first epoch with arch steps
            raise Stop

    with pytest.raises(Stop):
        interrupted.run(_loader(16, 1), _loader(16, 2), on_checkpoint=checkpoint)

    resumed = fresh(999)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved[-1])
    result_resumed = resumed.run(_loader(16, 1), _loader(16, 2))

    assert result_resumed.genotype == result_full.genotype
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [h["metrics"]["train/loss"] for h in result_resumed.history] == [
        h["metrics"]["train/loss"] for h in result_full.history
    ]


def test_nan_guard_names_epoch_and_step() -> None:
    model = _supernet()
    x = torch.randn(8, 3, 8, 8)
    x[5] = float("nan")
    loader = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.long)), batch_size=4)
    checkpoints: list[int] = []
    searcher = Searcher(model, replace(TINY_SEARCH, warmup_epochs=5), CPU, show_progress=False)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 1"):
        searcher.run(loader, loader, on_checkpoint=lambda s: checkpoints.append(s["epoch"]))
    assert checkpoints == []  # no checkpoint was written from a poisoned state


def test_topk_errors_on_hand_made_batch() -> None:
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # target 0: top-1 right
            [0.1, 0.9, 0.8, 0.0, 0.0, 0.0],  # target 2: top-1 wrong, top-5 right
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # target 5: wrong in both (6th)
            [0.0, 0.0, 0.0, 0.2, 0.9, 0.1],  # target 4: right
        ]
    )
    top1, top5 = topk_errors(logits, torch.tensor([0, 2, 5, 4]))
    assert top1 == pytest.approx(50.0)
    assert top5 == pytest.approx(25.0)


def test_training_resume_is_exact_and_tracks() -> None:
    genotype = get_genotype("pc_darts_cifar")

    def fresh(seed: int) -> Trainer:
        torch.manual_seed(seed)
        net = create_model(
            "pcdarts_cifar10", genotype=genotype, C=4, layers=3, num_classes=4, auxiliary=True
        )
        return Trainer(net, TINY_TRAIN, CPU, MemoryTracker(), show_progress=False)

    torch.manual_seed(7)
    full = fresh(7)
    res_full = full.run(_loader(16, 3, size=16), _loader(8, 4, size=16))
    assert full.model.drop_path_prob == pytest.approx(0.2 * 1 / 2)
    names = full.tracker.metric_names()  # type: ignore[attr-defined]
    assert {"train/loss", "train/top1_err", "test/top1_err", "test/top5_err", "lr"} <= names

    torch.manual_seed(7)
    part = fresh(7)
    states: list[dict[str, Any]] = []
    part.config = replace(TINY_TRAIN)
    part.run(
        _loader(16, 3, size=16),
        _loader(8, 4, size=16),
        on_checkpoint=lambda s: states.append(_roundtrip(s)),
    )
    resumed = fresh(1)
    resumed.load_state_dict(states[0])
    res_resumed = resumed.run(_loader(16, 3, size=16), _loader(8, 4, size=16))
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
    assert res_resumed.metrics["test/top1_err"] == res_full.metrics["test/top1_err"]


def test_channels_last_and_bf16_are_cuda_only() -> None:
    """On a CPU both switches leave the fp32, contiguous path, bit for bit (PyTorch 2.14.1's
    CPU conv backward on a channel slice of a channels-last tensor corrupts the heap)."""
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        config = replace(TINY_SEARCH, epochs=2, bf16=fast, channels_last=fast)
        searcher = Searcher(_supernet(), config, CPU, show_progress=False)
        searcher.run(_loader(16, 1), _loader(16, 2))
        assert all(p.is_contiguous() for p in searcher.model.parameters())
        results.append(searcher.model.state_dict())
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=0, atol=0, msg=name)
