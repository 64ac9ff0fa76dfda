"""The prepared GPU check: what a machine with one GPU can tell this project in one run.

Needs PyTorch and the library's own dependencies only (torchvision, numpy, Pillow, tqdm; no
DVC, MLflow, Hydra or MMDetection), with this repository on PYTHONPATH (scripts/gpu_check.sh
sets it; ``make gpu-check`` runs that). In under 8 minutes on one GPU it runs:

1. the ``gpu`` tests that need only the library (``tests/test_gpu.py``; where pytest is
   installed, else it says so);
2. the bf16 / channels-last search-step throughput benchmark
   (``benchmarks/search_throughput.py``, the paper's CIFAR-10 supernet at batch 256);
3. the forecast of the paper's two searches and two trainings from the library alone:
   ``pcdarts.profiling`` times the loops' own steps at the paper's per-process batch on
   synthetic inputs of the paper's shapes (no data loading), and multiplies by the steps of
   the real datasets' sizes (CIFAR-10, ILSVRC2012) over the paper's epochs;

and prints one JSON object on stdout (progress goes to stderr).

    bash scripts/gpu_check.sh                          # on the GPU machine
    python scripts/gpu_check.py --device cpu --quick   # the same code at toy sizes (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from pcdarts import SearchConfig, TrainConfig, create_model, get_genotype
from pcdarts.config import (
    CIFAR10_NETWORK_SHAPE,
    CIFAR_ARCH_FRACTION,
    CIFAR_IMAGE_SIZE,
    IMAGENET_ARCH_FRACTION,
    IMAGENET_IMAGE_SIZE,
    IMAGENET_NETWORK_SHAPE,
    IMAGENET_SEARCH_LOOP,
    IMAGENET_TRAIN_LOOP,
    IMAGENET_WEIGHT_FRACTION,
    SEARCH_BATCH_CIFAR10,
    SEARCH_BATCH_IMAGENET,
    SEARCH_K_CIFAR10,
    SEARCH_K_IMAGENET,
    SUPERNET_SHAPE,
    TRAIN_BATCH_CIFAR10,
    TRAIN_BATCH_IMAGENET,
    Shape,
)
from pcdarts.profiling import (
    CIFAR10_IMAGES,
    GB,
    IMAGENET_IMAGES,
    TorchMemoryMeter,
    forecast,
    free_memory_mb,
    measure_loop,
    scaling_assumption,
    search_phases,
    search_schedule,
    train_phases,
    train_schedule,
)
from pcdarts.runtime import resolve_device
from pcdarts.search import Searcher
from pcdarts.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
# The paper's processes: the CIFAR-10 search on one GTX 1080Ti, the ImageNet search on 8
# V100s (method §5); the trainings are forecast on the same (the paper gives no count).
CIFAR10_WORLD = 1
IMAGENET_WORLD = 8
BUDGET_FRACTION = 0.9  # of the GPU's free memory: a batch predicted above is extrapolated
SYNTHETIC_BATCHES = 2  # distinct random batches the loaders repeat
TESTS_TIMEOUT_S = 180
CLASSES = {"cifar10": 10, "imagenet": 1000}
# --quick: toy sizes; 32x32 is the smallest the ImageNet stem (/8) and two reductions take
QUICK_SHAPE = Shape(C=4, layers=3)
QUICK_IMAGE_SIZE = 32
QUICK_BATCH = 8  # per process


@dataclass(frozen=True)
class PaperLoop:
    """One loop of the paper's study, as the forecast runs it."""

    name: str
    kind: str  # "search" or "train"
    dataset: str
    world: int
    global_batch: int
    image_size: int
    shape: Shape
    loop: SearchConfig | TrainConfig
    samples: tuple[int, int]  # search: (weight, arch) split; training: (train, test) set
    k: int = 0  # the search's partial-channel K
    genotype: str = ""  # the training's cell (the paper's)


def paper_loops() -> list[PaperLoop]:
    cifar_train, cifar_test = CIFAR10_IMAGES
    imagenet_train, imagenet_val = IMAGENET_IMAGES
    cifar_arch = math.floor(CIFAR_ARCH_FRACTION * cifar_train)
    return [
        PaperLoop(
            "search@cifar10", "search", "cifar10", CIFAR10_WORLD, SEARCH_BATCH_CIFAR10,
            CIFAR_IMAGE_SIZE, SUPERNET_SHAPE, SearchConfig(),
            (cifar_train - cifar_arch, cifar_arch), k=SEARCH_K_CIFAR10,
        ),
        PaperLoop(  # the per-class subsets, about 10% and 2.5% of every class (method §5)
            "search@imagenet", "search", "imagenet", IMAGENET_WORLD, SEARCH_BATCH_IMAGENET,
            IMAGENET_IMAGE_SIZE, SUPERNET_SHAPE, IMAGENET_SEARCH_LOOP,
            (round(IMAGENET_WEIGHT_FRACTION * imagenet_train),
             round(IMAGENET_ARCH_FRACTION * imagenet_train)), k=SEARCH_K_IMAGENET,
        ),
        PaperLoop(
            "train_cifar10", "train", "cifar10", CIFAR10_WORLD, TRAIN_BATCH_CIFAR10,
            CIFAR_IMAGE_SIZE, CIFAR10_NETWORK_SHAPE, TrainConfig(), (cifar_train, cifar_test),
            genotype="pc_darts_cifar",
        ),
        PaperLoop(
            "train_imagenet", "train", "imagenet", IMAGENET_WORLD, TRAIN_BATCH_IMAGENET,
            IMAGENET_IMAGE_SIZE, IMAGENET_NETWORK_SHAPE, IMAGENET_TRAIN_LOOP,
            (imagenet_train, imagenet_val), genotype="pc_darts_imagenet",
        ),
    ]  # fmt: skip


def quick(loop: PaperLoop) -> PaperLoop:
    """The same loop at toy sizes, for a CPU in seconds: only the code path is checked."""
    return replace(
        loop,
        global_batch=QUICK_BATCH * loop.world,
        image_size=QUICK_IMAGE_SIZE,
        shape=QUICK_SHAPE,
    )


def _loader(batch: int, size: int, classes: int, device: torch.device) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    n = SYNTHETIC_BATCHES * batch
    data = TensorDataset(
        torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    )
    return DataLoader(data, batch_size=batch, pin_memory=device.type == "cuda")


def forecast_loop(loop: PaperLoop, device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """The loop's steps measured at its per-process batch (or extrapolated), and its forecast."""
    batch = loop.global_batch // loop.world
    classes = CLASSES[loop.dataset]
    torch.manual_seed(0)
    if loop.kind == "search":
        assert isinstance(loop.loop, SearchConfig)
        model = create_model(
            f"pcdarts_supernet_{loop.dataset}", C=loop.shape.C, layers=loop.shape.layers,
            num_classes=classes, k=loop.k,
        )  # fmt: skip
        searcher = Searcher(model, loop.loop, device, show_progress=False)  # type: ignore[arg-type]
        data = _loader(batch, loop.image_size, classes, device)
        phases = search_phases(searcher, data, data)
        schedule = search_schedule(loop.loop, *loop.samples, batch, loop.world)
    else:
        assert isinstance(loop.loop, TrainConfig)
        network = create_model(
            f"pcdarts_{loop.dataset}", genotype=get_genotype(loop.genotype), C=loop.shape.C,
            layers=loop.shape.layers, num_classes=classes,
        )  # fmt: skip
        trainer = Trainer(network, loop.loop, device, show_progress=False)  # type: ignore[arg-type]
        data = _loader(batch, loop.image_size, classes, device)
        phases = train_phases(trainer, data, data)
        schedule = train_schedule(loop.loop, *loop.samples, batch, loop.world)
    budget = BUDGET_FRACTION * free_memory_mb(device)
    meter = TorchMemoryMeter(device)
    m = measure_loop(
        phases, batch, warmup=warmup, steps=steps, budget_mb=budget, meter=meter, device=device
    )
    row: dict[str, Any] = {
        "network": {"C": loop.shape.C, "layers": loop.shape.layers, "k": loop.k or None,
                    "genotype": loop.genotype or None, "image_size": loop.image_size},
        "world": loop.world,
        "per_process_batch": batch,
        "measurement": m.to_dict(),
        "scaling": scaling_assumption(loop.world),
        "samples": list(loop.samples),
        "forecast": None,
    }  # fmt: skip
    if m.seconds:
        row["forecast"] = forecast(m.seconds, schedule, loop.world).to_dict()
    del phases, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def run_tests(device: torch.device) -> dict[str, Any]:
    """tests/test_gpu.py's ``gpu`` tests (skipped without CUDA), where pytest is installed."""
    if importlib.util.find_spec("pytest") is None:
        return {"status": "not run: pytest is not installed (pip install pytest)"}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    command.append(str(ROOT / "tests" / "test_gpu.py"))
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {TESTS_TIMEOUT_S} s"}
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    sys.stderr.write(result.stdout[-4000:] + result.stderr[-2000:])
    return {"returncode": result.returncode, "summary": lines[-1] if lines else ""}


def run_throughput(device: torch.device, is_quick: bool) -> dict[str, Any]:
    """benchmarks/search_throughput.py at its defaults (the paper's CIFAR-10 search)."""
    path = ROOT / "benchmarks" / "search_throughput.py"
    spec = importlib.util.spec_from_file_location("search_throughput", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["search_throughput"] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    argv = ["--device", str(device), "--rounds", "3", "--warmup", "3", "--steps", "10"]
    if is_quick:
        argv = ["--device", str(device), "--C", "4", "--layers", "3", "--batch", "4"]
        argv += ["--image-size", "8", "--rounds", "1", "--warmup", "0", "--steps", "1"]
    with contextlib.redirect_stdout(sys.stderr):  # its table goes to stderr; stdout is the JSON
        rows: dict[str, Any] = bench.main(argv)
    return {"argv": argv, "rows": rows}


def loaded_packages() -> list[str]:
    """Top-level packages outside the standard library this process imported (the check
    must need no pipeline SDK)."""
    tops = {name.split(".")[0] for name in sys.modules if not name.startswith("_")}
    return sorted(tops - set(sys.stdlib_module_names))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes: the code path only")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per loop phase")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per loop phase")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
    }
    if device.type == "cuda":
        result["memory_gb"] = torch.cuda.get_device_properties(device).total_memory / GB
    result["tests"] = {"status": "skipped (--skip-tests)"} if args.skip_tests else run_tests(device)
    print("throughput benchmark ...", file=sys.stderr, flush=True)
    result["throughput"] = run_throughput(device, args.quick)
    result["forecast"] = {}
    for loop in paper_loops():
        print(f"forecast: {loop.name} ...", file=sys.stderr, flush=True)
        loop = quick(loop) if args.quick else loop
        warmup, steps = (0, 1) if args.quick else (args.warmup, args.steps)
        result["forecast"][loop.name] = forecast_loop(loop, device, warmup, steps)
    forecasts = [f["forecast"] for f in result["forecast"].values() if f["forecast"]]
    result["forecast_total"] = {
        "wall_hours": sum(f["wall_hours"] for f in forecasts),
        "device_days": sum(f["device_days"] for f in forecasts),
        "not_included": "data loading, the SSD transfer and the K ablation",
    }
    result["packages"] = loaded_packages()
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
