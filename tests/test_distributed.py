"""Two CPU processes (gloo) give one search and one training: identical on every rank, and
equal to a single process with the same global batch.

Without SyncBatchNorm (CUDA only) each rank normalises its half of the batch, so against a
plain single-process run the two differ by what BN statistics over 32 instead of 64 images
change: the tolerances below. Adam turns small gradient differences of near-zero entries
into full-size steps of either sign, so the alphas are compared by the direction of their
update, the weights by value. Against a single process that normalises the same halves
(each step's batch = the two ranks' shards, forwarded one shard at a time) they agree to
float rounding: what DDP and the arch all-reduce compute is exactly that global step.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import create_model, get_genotype
from pcdarts.config import ArchitectConfig, SearchConfig, TrainConfig
from pcdarts.data.loaders import EpochSampler, make_loader
from pcdarts.distributed import max_divergence
from pcdarts.search import Searcher
from pcdarts.train import Trainer

pytestmark = pytest.mark.slow

GLOBAL_BATCH, WORLD = 64, 2
# Single process vs 2 ranks without SyncBatchNorm, measured on a 2-core CPU: cosine of the
# alpha/beta updates 0.89-0.997 after 2 arch steps; max |weight difference| 0.03 after 4
# training steps (lr 0.05).
MIN_UPDATE_COSINE = 0.85
WEIGHT_ATOL = 0.1
# Against one process normalising the same halves: float rounding at most (a mean over 64
# vs the mean of two means over 32); measured on a 2-core CPU: 0.0, bit for bit.
ROUNDING_ATOL = 1e-6


def _data(n: int, size: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 10)


def _checked(step: Callable[..., Any], module: torch.nn.Module, log: list[float]) -> Any:
    """``step``, then record how far the ranks' parameters are apart."""

    def checked(x: torch.Tensor, y: torch.Tensor) -> Any:
        out = step(x, y)
        log.append(max_divergence(list(module.parameters())))
        return out

    return checked


def rank_order(order: Sequence[int], shards: int, per_rank: int) -> Iterator[int]:
    """``order`` as one process would visit what ``shards`` ranks sharding it (rank r takes
    every shards-th item from r) see: rank 0's next ``per_rank`` items, rank 1's, and so on."""
    ranks = [order[r::shards] for r in range(shards)]
    for start in range(0, len(ranks[0]), per_rank):
        for items in ranks:
            yield from items[start : start + per_rank]


class RankOrderSampler(EpochSampler):
    """An EpochSampler whose one-process order is :func:`rank_order`'s."""

    def __init__(self, indices: Sequence[int], shards: int, per_rank: int, **kwargs: Any) -> None:
        super().__init__(indices, num_replicas=1, rank=0, **kwargs)
        self.shards, self.per_rank = shards, per_rank

    def __iter__(self) -> Iterator[int]:
        return rank_order(list(super().__iter__()), self.shards, self.per_rank)


def _ghost_batches(model: torch.nn.Module, shards: int) -> None:
    """Forward every batch as ``shards`` separate chunks (BN statistics per chunk, as per
    rank), outputs concatenated: one process computing what the ranks compute. Both entry
    points are chunked: ``forward`` (the supernet) and ``forward_with_aux`` (what the
    Trainer drives for a final network)."""

    def chunked(forward: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        def run(x: torch.Tensor) -> Any:
            outs = [forward(chunk) for chunk in x.chunk(shards)]
            if isinstance(outs[0], torch.Tensor):
                return torch.cat(outs)
            parts = (None if o[0] is None else torch.cat(o) for o in zip(*outs, strict=True))
            return type(outs[0])(*parts)

        return run

    for name in ("forward", "forward_with_aux"):
        if hasattr(model, name):
            setattr(model, name, chunked(getattr(model, name)))


def _loader(data: TensorDataset, world: int, seed: int, ghost: int) -> DataLoader:
    """The loader of one of ``world`` ranks or, with ``ghost`` > 1, of one process taking
    the global batch in the ranks' order."""
    if ghost == 1:
        return make_loader(data, None, GLOBAL_BATCH // world, shuffle=True, seed=seed)
    per_rank = GLOBAL_BATCH // ghost
    sampler = RankOrderSampler(range(len(data)), ghost, per_rank, shuffle=True, seed=seed)
    return DataLoader(data, batch_size=GLOBAL_BATCH, sampler=sampler)


def _search(world: int, ghost: int = 1) -> tuple[Searcher, list[float]]:
    torch.manual_seed(0)
    model = create_model("pcdarts_supernet_cifar10", C=4, layers=3, num_classes=10, k=2)
    if ghost > 1:
        _ghost_batches(model, ghost)
    config = SearchConfig(
        epochs=2, warmup_epochs=1, lr=0.05, architect=ArchitectConfig(lr=0.05), eval_every=99
    )
    searcher = Searcher(model, config, torch.device("cpu"), show_progress=False)
    divergence: list[float] = []  # after every weight step
    searcher._weight_step = _checked(searcher._weight_step, searcher.model, divergence)  # type: ignore[method-assign]
    weights = _loader(_data(128, 8, 1), world, 0, ghost)
    arch = _loader(_data(128, 8, 2), world, 1, ghost)
    searcher.run(weights, arch)
    return searcher, divergence


def _train(world: int, ghost: int = 1) -> tuple[Trainer, list[float]]:
    torch.manual_seed(0)
    model = create_model(
        "pcdarts_cifar10", genotype=get_genotype("pc_darts_cifar"), C=4, layers=3, auxiliary=False
    )
    if ghost > 1:
        _ghost_batches(model, ghost)
    config = TrainConfig(epochs=2, lr=0.05, drop_path_prob=0.0, eval_every=99)
    trainer = Trainer(model, config, torch.device("cpu"), show_progress=False)
    divergence: list[float] = []
    trainer._step = _checked(trainer._step, trainer.model, divergence)  # type: ignore[method-assign]
    train = _loader(_data(128, 8, 3), world, 0, ghost)
    test = make_loader(_data(64, 8, 4), None, GLOBAL_BATCH // world, shuffle=False, seed=0)
    trainer.run(train, test)
    return trainer, divergence


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters (BN running statistics are per rank; DDP broadcasts rank 0's at each
    forward and only rank 0 saves checkpoints)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _worker(rank: int, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        searcher, search_div = _search(WORLD)
        trainer, train_div = _train(WORLD)
        torch.save(
            {
                "search": _state(searcher.model),
                "arch": [p.detach().clone() for p in searcher.model.arch_parameters()],
                "search_div": search_div,
                "search_metrics": searcher.history[-1]["metrics"],
                "train": _state(trainer.model),
                "train_div": train_div,
            },
            out / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, out), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_every_rank_holds_the_same_arch_and_weights_after_every_step(
    ranks: list[dict[str, Any]],
) -> None:
    for r in ranks:
        assert len(r["search_div"]) == 4 and max(r["search_div"]) == 0.0  # 2 epochs x 2 steps
        assert len(r["train_div"]) == 4 and max(r["train_div"]) == 0.0
    for key in ("search", "train"):
        for name, value in ranks[0][key].items():
            torch.testing.assert_close(ranks[1][key][name], value, rtol=0, atol=0, msg=name)
    assert ranks[0]["search_metrics"] == ranks[1]["search_metrics"]  # reduced, then logged


def test_two_ranks_match_one_process_with_the_same_global_batch(
    ranks: list[dict[str, Any]],
) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = create_model(
        "pcdarts_supernet_cifar10", C=4, layers=3, num_classes=10, k=2
    ).arch_parameters()
    single, _ = _search(1)
    pairs = zip(ranks[0]["arch"], single.model.arch_parameters(), start, strict=True)
    for got, want, initial in pairs:
        ours, theirs = (got - initial).flatten(), (want.detach() - initial.detach()).flatten()
        assert theirs.abs().max() > 0.05  # the arch steps moved the alphas
        cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=0)
        assert cosine >= MIN_UPDATE_COSINE
    arch_names = ("alphas", "betas")
    reference = _state(single.model)
    for name, value in ranks[0]["search"].items():
        if not name.startswith(arch_names):
            torch.testing.assert_close(value, reference[name], rtol=0, atol=WEIGHT_ATOL)
    trained, _ = _train(1)
    reference = _state(trained.model)
    for name, value in ranks[0]["train"].items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=WEIGHT_ATOL)


def test_two_ranks_equal_one_process_normalising_the_same_halves(
    ranks: list[dict[str, Any]],
) -> None:
    torch.set_num_threads(1)
    searched, _ = _search(1, ghost=WORLD)
    for got, want in zip(ranks[0]["arch"], searched.model.arch_parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=ROUNDING_ATOL)
    reference = _state(searched.model)
    for name, value in ranks[0]["search"].items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=ROUNDING_ATOL, msg=name)
    trained, _ = _train(1, ghost=WORLD)
    reference = _state(trained.model)
    for name, value in ranks[0]["train"].items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=ROUNDING_ATOL, msg=name)
