"""detection/: the PC-DARTS backbone in MMDetection, checkpoint conversion, SSD end to end.

Tiny networks and 64 px canvases on CPU. Skipped where MMDetection is not installed
(``make venv`` builds mmcv and installs the ``detection`` extra), never in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

if os.environ.get("CI"):  # CI installs the detection extra: a failed import is a real failure
    import mmdet.models  # noqa: F401
else:
    pytest.importorskip(
        "mmdet.models",
        reason="MMDetection is not installed: `make venv` builds mmcv and installs it",
    )

from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import DefaultSampler  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import DATA_SAMPLERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from test_distributed import rank_order  # noqa: E402 - tests/ is on sys.path

from detection.backbone import PCDARTSBackbone  # noqa: E402
from detection.checkpoint import (  # noqa: E402
    BACKBONE_PREFIX,
    convert_imagenet_checkpoint,
    load_backbone_state,
)
from detection.configs import CONFIGS, config_file  # noqa: E402
from detection.transfer import (  # noqa: E402
    COCO_METRICS,
    BackboneInit,
    CocoData,
    DivergenceHook,
    Schedule,
    TransferResult,
    build_config,
    set_aside_broken_resume_point,
    train_and_evaluate,
)
from pcdarts import create_model, get_genotype  # noqa: E402
from pcdarts.config import IMAGENET_NETWORK_SHAPE  # noqa: E402
from pcdarts.distributed import unwrap  # noqa: E402
from pipeline.embedded_data import write_digits_coco  # noqa: E402

TINY = {"C": 8, "layers": 6}  # cells 0-1 at stride 8, 2-3 at 16, 4-5 at 32
GENOTYPE = "pc_darts_imagenet"
CPU = torch.device("cpu")


def backbone(**kwargs: Any) -> PCDARTSBackbone:
    cfg = {"type": "PCDARTSBackbone", "genotype": GENOTYPE, **TINY, "out_indices": (1, 3, 5)}
    module = MODELS.build({**cfg, **kwargs})
    assert isinstance(module, PCDARTSBackbone)
    return module


def imagenet_checkpoint(C: int = 8, layers: int = 6) -> dict[str, Any]:  # noqa: N803
    """What stages.train writes for the ImageNet network (with auxiliary head)."""
    shape = {"C": C, "layers": layers, "num_classes": 10}
    net = create_model("pcdarts_imagenet", genotype=get_genotype(GENOTYPE), auxiliary=True, **shape)
    network = {"dataset": "imagenet", **shape}
    for p in net.parameters():  # not the default init: a real load must change the backbone
        nn.init.normal_(p)
    return {
        "model": net.state_dict(),
        "genotype": get_genotype(GENOTYPE).to_dict(),
        "network": {**network, "auxiliary": True},
        "params": {},
    }


def test_backbone_builds_through_the_registry_and_returns_its_cells() -> None:
    net = backbone().eval()
    feats = net(torch.zeros(2, 3, 64, 64))
    assert [f.shape for f in feats] == [(2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
    assert net.channels == (32, 64, 128) and net.strides == (8, 16, 32)


def test_genotype_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(get_genotype(GENOTYPE).to_dict()))
    assert backbone(genotype=str(path)).genotype == get_genotype(GENOTYPE)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"out_indices": (1, 6)}, ValueError, "outside cells"),
        ({"out_indices": (3, 1)}, ValueError, "must increase"),
        ({"frozen_stages": 9}, ValueError, "frozen_stages"),
        ({"C": 7}, ValueError, "even"),
        ({"genotype": "no_such_cell"}, KeyError, "pc_darts_imagenet"),
        ({"genotype": "missing.json"}, FileNotFoundError, "missing.json"),
        ({"init_cfg": {"type": "Pretrained", "checkpoint": "nope.pth"}}, FileNotFoundError, "nope"),
    ],
)
def test_bad_arguments_fail_up_front(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        backbone(**kwargs)


def test_frozen_stages_fix_the_stem_and_first_cells() -> None:
    net = backbone(frozen_stages=1).train()
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.cells[0].parameters())
    assert all(p.requires_grad for p in net.cells[1].parameters())
    assert not any(m.training for m in net.stem.modules())
    assert all(m.training for m in net.cells[1].modules())


def test_norm_eval_keeps_batchnorm_statistics_fixed() -> None:
    net = backbone(norm_eval=True).train()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert all(p.requires_grad for p in net.parameters())
    before = [m.running_mean.clone() for m in norms]
    net(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))


def test_conversion_round_trips_every_backbone_weight(tmp_path: Path) -> None:
    checkpoint = imagenet_checkpoint()
    converted = convert_imagenet_checkpoint(checkpoint)
    net = backbone()
    expected = {BACKBONE_PREFIX + k for k in net.state_dict()}
    assert set(converted["state_dict"]) == expected  # no classifier, aux head or extra state
    assert converted["meta"]["C"] == TINY["C"] and converted["meta"]["layers"] == TINY["layers"]
    path = tmp_path / "backbone.pth"
    torch.save(converted, path)
    loaded = backbone(init_cfg={"type": "Pretrained", "checkpoint": str(path)})
    loaded.init_weights()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, checkpoint["model"][key]), key
    assert set(load_backbone_state(path)) == set(net.state_dict())


def test_a_checkpoint_of_another_size_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    torch.save(convert_imagenet_checkpoint(imagenet_checkpoint(C=12)), path)
    net = backbone(init_cfg={"type": "Pretrained", "checkpoint": str(path)})
    with pytest.raises(ValueError, match="backbone.pth"):
        net.init_weights()


def test_conversion_refuses_the_cifar_network() -> None:
    checkpoint = imagenet_checkpoint()
    checkpoint["network"]["dataset"] = "cifar10"
    with pytest.raises(ValueError, match="ImageNet network"):
        convert_imagenet_checkpoint(checkpoint)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_backbone_fits_the_ssd_neck_and_anchors(name: str) -> None:
    model = Config.fromfile(str(config_file(name))).model
    b, neck, head = model.backbone, model.neck, model.bbox_head
    cells = create_model(
        "pcdarts_imagenet", genotype=get_genotype(b.genotype), C=b.C, layers=b.layers
    ).feature_info
    channels = [cells[i]["num_chs"] for i in b.out_indices]
    strides = [cells[i]["reduction"] for i in b.out_indices]
    assert tuple(neck.in_channels) == tuple(channels)
    assert tuple(neck.out_channels[: len(channels)]) == tuple(channels)
    assert tuple(head.in_channels) == tuple(neck.out_channels)
    assert list(head.anchor_generator.strides[: len(strides)]) == strides
    assert head.type == "PredictableSSDHead"


def test_the_paper_config_has_the_paper_network() -> None:
    """The MMDetection config states C and layers (it runs without this repository's
    Python); they are the paper's, as pcdarts.config writes them."""
    backbone = Config.fromfile(str(config_file("ssdlite_pcdarts_320_coco"))).model.backbone
    assert (backbone.C, backbone.layers) == (
        IMAGENET_NETWORK_SHAPE.C,
        IMAGENET_NETWORK_SHAPE.layers,
    )


def test_tiny_detector_predicts_without_the_loss_cls_crash() -> None:
    """mmdetection#11780: SSDHead's predict read a loss_cls it never set."""
    cfg = Config.fromfile(str(config_file("ssdlite_pcdarts_tiny_digits")))
    detector = MODELS.build(cfg.model).eval()
    sample = DetDataSample(metainfo={"img_shape": (128, 128), "ori_shape": (128, 128)})
    sample.set_metainfo({"scale_factor": (1.0, 1.0), "batch_input_shape": (128, 128)})
    with torch.no_grad():
        results = detector(torch.zeros(1, 3, 128, 128), [sample], mode="predict")
    assert results[0].pred_instances.bboxes.shape[-1] == 4


@pytest.mark.slow
def test_ssd_trains_evaluates_and_resumes_on_tiny_coco(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    root = tmp_path / "coco"
    write_digits_coco(
        root, canvas_size=64, images_train=16, images_val=8, scale_range=(16, 32), seed=0
    )
    categories = json.loads((root / "annotations/instances_val2017.json").read_text())
    classes = tuple(c["name"] for c in sorted(categories["categories"], key=lambda c: c["id"]))
    genotype = get_genotype(GENOTYPE).to_dict()
    weights = tmp_path / "backbone.pth"
    checkpoint = imagenet_checkpoint(C=12, layers=6)
    torch.save(convert_imagenet_checkpoint(checkpoint), weights)
    cfg = build_config(
        config_file("ssdlite_pcdarts_tiny_digits"),
        CocoData(root, classes),
        Schedule(epochs=1, batch_size=4, lr=0.01, val_interval=1, log_interval=2),
        BackboneInit(genotype, 12, 6, weights),
        seed=0,
    )
    logged: list[tuple[dict[str, float], int]] = []
    result = train_and_evaluate(
        cfg, tmp_path / "work", lambda m, step: logged.append((m, step)), CPU
    )
    assert set(result.metrics) == set(COCO_METRICS)
    assert all(-1.0 <= v <= 1.0 for v in result.metrics.values())  # -1: no object of a size
    assert any("train/loss" in m for m, _ in logged) and any("val/bbox_mAP" in m for m, _ in logged)
    assert result.history[0]["epoch"] == 1 and "train/loss" in result.history[0]
    state = result.checkpoint["state_dict"]
    assert any(k.startswith("backbone.cells.") for k in state)
    assert result.checkpoint["meta"]["dataset_meta"]["classes"] == classes
    # Rerun in the same folder: resumes after the last epoch and only evaluates.
    again = train_and_evaluate(cfg, tmp_path / "work", lambda m, step: None, CPU)
    assert again.metrics == pytest.approx(result.metrics)
    assert again.history[0]["epoch"] == 1


def _classes(root: Path) -> tuple[str, ...]:
    categories = json.loads((root / "annotations/instances_val2017.json").read_text())
    return tuple(c["name"] for c in sorted(categories["categories"], key=lambda c: c["id"]))


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(Hook):
    """Raises once the first epoch's checkpoint is saved: a stage killed mid-training."""

    priority = "LOWEST"  # after CheckpointHook (VERY_LOW) has written the epoch

    def after_train_epoch(self, runner: Runner) -> None:
        raise _Interrupt


@pytest.mark.slow
def test_ssd_interrupted_mid_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    root = tmp_path / "coco"
    write_digits_coco(root, canvas_size=64, images_train=8, images_val=4, scale_range=(16, 32))
    cfg = build_config(
        config_file("ssdlite_pcdarts_tiny_digits"),
        CocoData(root, _classes(root)),
        Schedule(epochs=2, batch_size=4, lr=0.01, val_interval=2, log_interval=1),
        BackboneInit(get_genotype(GENOTYPE).to_dict(), 12, 6),
        seed=0,
    )

    def run(work: str, *hooks: Hook) -> tuple[TransferResult, list[int]]:
        steps: list[int] = []
        result = train_and_evaluate(
            cfg,
            tmp_path / work,
            lambda m, step: steps.append(step) if "train/loss" in m else None,
            CPU,
            hooks=hooks,
        )
        return result, steps

    full, full_steps = run("full")
    with pytest.raises(_Interrupt):
        run("stopped", _StopAfterFirstEpoch())
    resumed, resumed_steps = run("stopped")
    assert full_steps == [1, 2, 3, 4]  # 2 epochs of 2 iterations
    assert resumed_steps == [3, 4]  # only the second epoch ran again
    assert [row["epoch"] for row in resumed.history] == [1.0, 2.0]  # epoch 1 from the checkpoint
    assert resumed.history[0] == pytest.approx(full.history[0])
    for name, value in full.checkpoint["state_dict"].items():  # bit for bit, on the CPU
        torch.testing.assert_close(
            resumed.checkpoint["state_dict"][name], value, rtol=0, atol=0, msg=name
        )
    assert resumed.metrics == full.metrics

    # Killed while MMEngine (not atomically) saved epoch 2: a truncated last checkpoint.
    (tmp_path / "full" / "epoch_2.pth").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.warns(RuntimeWarning, match="epoch_2.pth cannot be resumed from"):
        again, again_steps = run("full")
    assert again_steps == [1, 2, 3, 4]  # started afresh, no crash
    assert (tmp_path / "full" / "epoch_2.pth.corrupt-1").is_file()
    assert again.metrics == full.metrics


def test_a_broken_resume_point_is_set_aside_and_a_good_one_kept(tmp_path: Path) -> None:
    assert set_aside_broken_resume_point(tmp_path) is None  # a fresh work folder
    good = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {}, "meta": {"epoch": 1}}, good)
    (tmp_path / "last_checkpoint").write_text(str(good))
    assert set_aside_broken_resume_point(tmp_path) is None
    assert good.is_file() and (tmp_path / "last_checkpoint").is_file()
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=f"SSD checkpoint {good} cannot be resumed"):
        assert set_aside_broken_resume_point(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_1.pth.corrupt-1",
        "last_checkpoint.corrupt-1",
    ]
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_9.pth"))  # deleted file
    with pytest.warns(RuntimeWarning, match="epoch_9.pth"):
        set_aside_broken_resume_point(tmp_path)
    assert not (tmp_path / "last_checkpoint").exists()


# --- two processes (gloo) through MMEngine's `pytorch` launcher ---------------------------

GLOBAL_BATCH, WORLD, ITERATIONS = 8, 2, 2
SSD_LR = 0.05  # constant (no warm-up, no decay): two iterations move the weights visibly
# The single-process reference takes the same global batch per step as two accumulated
# half-batches, the very shards the two ranks see: BN statistics over 4 images and SSD's
# loss normalised by the positives of 4 images, as on each rank. (Against one batch of 8
# the two differ by what those statistics change: on the 1x1 and 2x2 maps of the tiny SSD
# that was 37-83% of the update, L2, over four backbone seeds: too seed-bound to test.)
# Then they agree bit for bit: gloo's (g0 + g1) / 2 and the accumulated g0 / 2 + g1 / 2 are
# the same floats (halving is exact), and so is everything downstream.


@DATA_SAMPLERS.register_module()
class RankOrderSampler(DefaultSampler):
    """MMEngine's DefaultSampler, in one process, in :func:`rank_order`'s order."""

    def __init__(self, dataset: Any, shards: int, per_rank: int, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.shards, self.per_rank = shards, per_rank

    def __iter__(self) -> Iterator[int]:
        return rank_order(list(super().__iter__()), self.shards, self.per_rank)


class _InitialWeights(Hook):
    """The detector's parameters once initialised, before the first iteration."""

    def before_train(self, runner: Runner) -> None:
        model = unwrap(runner.model)
        self.state = {k: v.detach().clone() for k, v in model.named_parameters()}


def _ssd_run(
    base: Path, work: Path, batch: int, accumulate: int = 1
) -> tuple[TransferResult, list[float], list[Any]]:
    """One epoch of ``ITERATIONS`` optimizer steps on ``base``'s data and backbone weights,
    each over ``accumulate`` batches of ``batch`` images in ``RankOrderSampler``'s order."""
    categories = json.loads((base / "coco/annotations/instances_val2017.json").read_text())
    classes = tuple(c["name"] for c in sorted(categories["categories"], key=lambda c: c["id"]))
    cfg = build_config(
        config_file("ssdlite_pcdarts_tiny_digits"),
        CocoData(base / "coco", classes),
        Schedule(epochs=1, batch_size=batch, lr=SSD_LR, val_interval=1, log_interval=1),
        BackboneInit(get_genotype(GENOTYPE).to_dict(), 12, 6, base / "backbone.pth"),
        seed=0,
    )
    cfg.param_scheduler = None
    if accumulate > 1:
        cfg.optim_wrapper.accumulative_counts = accumulate
        cfg.train_dataloader.sampler = dict(
            type="RankOrderSampler", shards=accumulate, per_rank=batch, shuffle=True
        )
    check, initial = DivergenceHook(), _InitialWeights()
    logged: list[tuple[dict[str, float], int]] = []
    result = train_and_evaluate(
        cfg, work, lambda m, step: logged.append((m, step)), CPU, hooks=(check, initial)
    )
    return result, check.divergence, [initial.state, logged]


def _ssd_worker(rank: int, port: int, base: Path) -> None:
    torch.set_num_threads(1)
    # What torchrun sets; MMEngine's launcher reads LOCAL_RANK.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result, divergence, logged = _ssd_run(base, base / "work", GLOBAL_BATCH // WORLD)
        torch.save(
            {"result": result, "divergence": divergence, "initial": logged[0], "logged": logged[1]},
            base / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ssd_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    base = tmp_path_factory.mktemp("ssd_ddp")
    write_digits_coco(
        base / "coco",
        canvas_size=64,
        images_train=GLOBAL_BATCH * ITERATIONS,
        images_val=4,
        scale_range=(16, 32),
        seed=0,
    )
    torch.manual_seed(0)  # the backbone's weights, whatever ran before
    torch.save(
        convert_imagenet_checkpoint(imagenet_checkpoint(C=12, layers=6)), base / "backbone.pth"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with contextlib.chdir(base):  # where MMEngine's default collection would leave .dist_test/
        mp.spawn(_ssd_worker, args=(port, base), nprocs=WORLD, join=True)
    return base, [torch.load(base / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
def test_ssd_ranks_stay_identical_and_match_one_process(
    ssd_ranks: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    base, ranks = ssd_ranks
    for r in ranks:  # DDP kept the weights identical after every iteration
        assert r["divergence"] == [0.0] * ITERATIONS
    first, second = (r["result"] for r in ranks)
    assert first.metrics == second.metrics  # CocoMetric gathered both ranks' predictions ...
    assert not (base / ".dist_test").exists()  # ... through the process group, not files
    assert ranks[0]["logged"] == ranks[1]["logged"]  # losses averaged over ranks, then sent
    assert first.cost.device_count == WORLD
    for name, value in first.checkpoint["state_dict"].items():
        if value.is_floating_point() and "running" not in name:  # BN statistics are per rank
            torch.testing.assert_close(second.checkpoint["state_dict"][name], value, rtol=0, atol=0)
    # One process, the same global batch per step: the ranks' shards, accumulated.
    torch.set_num_threads(1)
    batch = GLOBAL_BATCH // WORLD
    single, _, (initial, _) = _ssd_run(base, tmp_path / "single", batch, accumulate=WORLD)
    for name, value in initial.items():  # the same seed, the same start
        torch.testing.assert_close(ranks[0]["initial"][name], value, rtol=0, atol=0)
    moved = differ = 0.0
    for name, start in initial.items():
        want = single.checkpoint["state_dict"][name]
        got = first.checkpoint["state_dict"][name]
        moved = max(moved, (want - start).abs().max().item())
        differ = max(differ, (got - want).abs().max().item())
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
    print(f"max |update| {moved:.4g}, max |2 ranks - 1 process| {differ:.4g}")
    assert moved > 1e-2  # the two steps did train the detector
