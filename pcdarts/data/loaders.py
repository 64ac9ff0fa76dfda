"""Seeded, resumable, distributed data loading: the epoch sampler and ``make_loader``."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

NUMPY_SEED_MODULUS = 2**32  # np.random.seed accepts seeds in [0, 2**32)
WORKER_SEED_STREAM = 1  # separates worker seeds from the sampler's permutation seeds


class EpochSampler(Sampler[int]):
    """Yields ``indices`` in an order fixed by (seed, epoch); sharded under torch.distributed.

    The loop calls ``set_epoch(epoch)`` before each epoch (as with DistributedSampler), so
    the order of epoch e is the same in a fresh run and in one resumed at e. When a process
    group is initialised, the (shuffled) list is padded by wrapping around to a multiple of
    the world size and rank r takes every world_size-th item from r, as DistributedSampler.
    ``worker_generator`` (set by :func:`make_loader`) is the DataLoader's generator; it is
    reseeded per epoch so the worker seeds, hence worker-side augmentation, resume too.
    """

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        worker_generator: torch.Generator | None = None,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        self.num_replicas, self.rank = num_replicas, rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside [0, {self.num_replicas})")
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if self.indices.ndim != 1 or len(self.indices) == 0:
            raise ValueError("EpochSampler needs a non-empty 1-D index list")
        self.shuffle = shuffle
        self.seed = seed
        self.worker_generator = worker_generator
        self.num_samples = math.ceil(len(self.indices) / self.num_replicas)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Fix the order of the next pass to that of ``epoch``."""
        self.epoch = epoch
        if self.worker_generator is not None:
            key = (self.seed, epoch, self.rank, WORKER_SEED_STREAM)
            self.worker_generator.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def __iter__(self) -> Iterator[int]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # as DistributedSampler: seed + epoch
            order = order[torch.randperm(len(order), generator=g)]
        total = self.num_samples * self.num_replicas
        if total > len(order):  # pad by wrapping so every rank gets num_samples
            reps = math.ceil(total / len(order))
            order = order.repeat(reps)[:total]
        return iter(order[self.rank : total : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed.

    torch seeds each worker with base_seed + worker_id; numpy and ``random`` are not, so
    without this every worker would repeat the same numpy draws.
    """
    seed = torch.initial_seed() % NUMPY_SEED_MODULUS
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what worker code uses
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    indices: np.ndarray | None,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """A DataLoader over ``dataset[indices]`` (all of it when None) with an EpochSampler.

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch: the order and the worker
    seeds are then functions of (seed, epoch, rank) only. With ``num_workers=0`` the
    augmentation draws from the main process's torch RNG, which checkpoints save.
    """
    if indices is None:
        indices = np.arange(len(dataset))  # type: ignore[arg-type]
    generator = torch.Generator()
    sampler = EpochSampler(indices, shuffle=shuffle, seed=seed, worker_generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        generator=generator,
    )
