"""A stage on the CPU runs the same arithmetic on every machine: a fixed thread count
(the result depends on it) and PyTorch's deterministic algorithms, strictly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from pipeline import launch
from pipeline.launch import CPU_THREADS, configure_runtime


@pytest.fixture(autouse=True)
def _restore_torch_settings() -> Iterator[None]:
    threads = torch.get_num_threads()
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)


@pytest.fixture
def many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with 8 cores, whatever this one has."""
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


@pytest.mark.usefixtures("many_cores")
def test_cpu_threads_are_fixed_and_algorithms_deterministic() -> None:
    torch.use_deterministic_algorithms(False)
    configure_runtime(torch.device("cpu"))
    assert torch.get_num_threads() == CPU_THREADS == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.mark.usefixtures("many_cores")
def test_cuda_keeps_the_cores_and_its_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    torch.use_deterministic_algorithms(False)
    configure_runtime(torch.device("cuda", 0))  # sets threads only: no CUDA needed
    assert torch.get_num_threads() == 4
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.usefixtures("many_cores")
def test_a_search_step_has_deterministic_cpu_kernels() -> None:
    """Strict mode raises on an op without a deterministic CPU kernel: the supernet (fused
    cell included) has none, and two steps give the same bits."""
    from pcdarts import create_model

    configure_runtime(torch.device("cpu"))

    def grads() -> torch.Tensor:
        torch.manual_seed(0)
        net = create_model("pcdarts_supernet_cifar10", C=8, layers=5, num_classes=10, k=4)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])

    assert torch.equal(grads(), grads())
