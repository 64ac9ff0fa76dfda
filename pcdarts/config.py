"""The typed configs of the library's loops: every setting of method §5-6, paper values as defaults.

Plain frozen dataclasses with no torch import, so a config schema (pipeline/config.py) can
use them without depending on the loops' code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULES = ("cosine", "linear")  # lr_schedule choices, per-epoch factors in pcdarts/schedule.py


@dataclass(frozen=True)
class Shape:
    """A network's size: initial channels C and number of cells."""

    C: int  # the paper's name for the initial channels
    layers: int


# The paper's sizes, written here once: the models (pcdarts.models) and the params schema
# take them from here.
SUPERNET_SHAPE = Shape(C=16, layers=8)  # method §5, both searches
SEARCH_K_CIFAR10 = 4  # partial-channel K of the CIFAR-10 search (method §2, §5)
SEARCH_K_IMAGENET = 2  # partial-channel K of the ImageNet search (method §5)
CIFAR10_NETWORK_SHAPE = Shape(C=36, layers=20)  # the CIFAR-10 evaluation network, method §6
IMAGENET_NETWORK_SHAPE = Shape(C=48, layers=14)  # the ImageNet mobile-setting network, method §6
CIFAR10_CLASSES = 10
IMAGENET_CLASSES = 1000  # ILSVRC2012

# Search splits: CIFAR-10 50/50 weights/arch; ImageNet 10% + 2.5% per class (method §5).
CIFAR_ARCH_FRACTION = 0.5
IMAGENET_WEIGHT_FRACTION = 0.1
IMAGENET_ARCH_FRACTION = 0.025

# Inputs and augmentation (method §5-6); pcdarts.data.transforms and the params schema read
# them here.
CIFAR_IMAGE_SIZE = 32  # CIFAR-10 images are 32x32 (method §5 "random crop 32 pad 4")
CIFAR_CROP_PADDING = 4  # method §5-6: random crop 32, pad 4
CUTOUT_LENGTH = 16  # method §6: cutout of the CIFAR-10 evaluation (DARTS)
IMAGENET_IMAGE_SIZE = 224  # method §5-6: random resized crop 224
# RandomResizedCrop's area lower bound (torchvision's default, the reference's)
IMAGENET_CROP_SCALE_MIN = 0.08
# Colour jitter (brightness, contrast, saturation, hue) of the ImageNet retraining (method §6).
IMAGENET_COLOR_JITTER: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)


@dataclass(frozen=True)
class SupernetOptions:
    """What a study chooses for its supernet: size, K and EN; defaults are the CIFAR-10
    search (method §5). :class:`~pcdarts.supernet.SupernetConfig` adds what follows from
    the dataset (stem, classes); the params schema embeds this as ``search.<ds>.network``."""

    C: int = SUPERNET_SHAPE.C  # initial channels, method §5 (both searches)
    layers: int = SUPERNET_SHAPE.layers  # cells, method §5 (both searches)
    k: int = SEARCH_K_CIFAR10  # partial-channel K (method §2): 4 CIFAR-10, 2 ImageNet
    edge_norm: bool = True  # method §3; off for the EN ablation


@dataclass(frozen=True)
class NetworkOptions:
    """What a study chooses for a final network: size and the auxiliary head; defaults are
    the CIFAR-10 evaluation network (method §6). :class:`~pcdarts.network.NetworkConfig`
    adds the cell and what follows from the dataset (stem, classes)."""

    C: int = CIFAR10_NETWORK_SHAPE.C  # initial channels, method §6 (ImageNet: 48)
    layers: int = CIFAR10_NETWORK_SHAPE.layers  # cells, method §6 (ImageNet: 14)
    auxiliary: bool = True  # auxiliary head at 2/3 of the depth, method §6


IMAGENET_SEARCH_NETWORK = SupernetOptions(k=SEARCH_K_IMAGENET)  # method §5
IMAGENET_NETWORK = NetworkOptions(C=IMAGENET_NETWORK_SHAPE.C, layers=IMAGENET_NETWORK_SHAPE.layers)


@dataclass(frozen=True)
class ArchitectConfig:
    lr: float = 6e-4  # arch Adam lr: 6e-4 CIFAR-10, 6e-3 ImageNet (method §5)
    weight_decay: float = 1e-3  # arch Adam weight decay (method §5)
    betas: tuple[float, float] = (0.5, 0.999)  # arch Adam betas (method §5)
    grad_clip: float | None = None  # 5 for the ImageNet search (method §5); None = no clipping
    second_order: bool = False  # DARTS unrolled step; PC-DARTS uses first order (method §5)
    hvp_eps: float = 0.01  # finite-difference step r; eps = r / ||v|| (DARTS reference)


@dataclass(frozen=True)
class DiagnosticsConfig:
    """What a search measures about itself besides its loss (issue 25); it only observes.

    The dominant eigenvalue of the Hessian of the arch-split loss with respect to the
    architecture weights is the collapse indicator of Zela et al., "Understanding and
    Robustifying DARTS" (ICLR 2020); PC-DARTS measures none, so it is off by default.
    """

    hessian: bool = False  # measure the eigenvalue (pcdarts.diagnostics); off: the paper's search
    hessian_every: int = 2  # epochs between evaluations (and after the last): RobustDARTS' ev_freq
    # Images of the fixed held-out batch, drawn once from the arch split: RobustDARTS takes one
    # batch of its search (64 images)
    hessian_batch_size: int = 64
    hessian_iterations: int = 20  # power-iteration steps at most (each one Hessian-vector product)
    # Stop iterating once the estimate moves by less than this fraction of itself
    hessian_tolerance: float = 1e-3


@dataclass(frozen=True)
class RobustDartsRule:
    """DARTS-ES (Zela et al., ICLR 2020): stop when the eigenvalue's local average grows.

    The local average is the mean of the last ``window`` evaluations; the search stops when
    it exceeds ``factor`` times the local average ``delta`` evaluations earlier. Defaults are
    the RobustDARTS code's (automl/RobustDARTS, src/search/args.py); the paper writes the
    same test as a ratio below 0.75 (1 / 1.3 rounded).
    """

    enabled: bool = False  # off: PC-DARTS has no stopping rule; needs diagnostics.hessian
    window: int = 5  # evaluations per local average (RobustDARTS --window)
    delta: int = 4  # compare with the local average this many evaluations earlier (--delta)
    factor: float = 1.3  # stop when the ratio of the two exceeds this (--factor)
    start_epoch: int = 10  # never stop before this epoch (--es_start_epoch)


@dataclass(frozen=True)
class DartsPlusRule:
    """DARTS+ criterion 1 (Liang et al. 2019, "DARTS+: Improved Differentiable Architecture
    Search with Early Stopping"): stop once the normal cell has two or more skip
    connections."""

    enabled: bool = False  # off: PC-DARTS has no stopping rule
    skip_connections: int = 2  # stop at this many skip connections in the normal cell or more
    # Never stop before this epoch (nor in the weight-only warm-up, when the alphas are frozen)
    start_epoch: int = 0


@dataclass(frozen=True)
class StoppingConfig:
    """Optional early stopping of the search (issue 25); both rules off by default."""

    robust_darts: RobustDartsRule = field(default_factory=RobustDartsRule)
    darts_plus: DartsPlusRule = field(default_factory=DartsPlusRule)


@dataclass(frozen=True)
class SearchConfig:
    """Search hyper-parameters; defaults are the CIFAR-10 search of method §5."""

    epochs: int = 50  # method §5, both datasets
    warmup_epochs: int = 15  # weight-only epochs before arch steps: 15 CIFAR-10, 35 ImageNet
    lr: float = 0.1  # weight SGD lr: 0.1 CIFAR-10 (PC-DARTS code), 0.5 ImageNet
    lr_min: float = 0.0  # cosine floor (reference learning_rate_min)
    lr_schedule: str = "cosine"  # method §5: cosine for both searches
    lr_warmup_epochs: int = 0  # linear lr warm-up epochs: 0 CIFAR-10, 5 ImageNet
    momentum: float = 0.9  # method §5
    weight_decay: float = 3e-4  # method §5
    grad_clip: float = 5.0  # weight gradient norm clip, method §5
    architect: ArchitectConfig = field(default_factory=ArchitectConfig)
    eval_every: int = 1  # evaluate the supernet on the arch split every n epochs (and the last)
    sync_bn: bool = (
        False  # SyncBatchNorm in the supernet under torchrun (CUDA; BN over the global batch)
    )
    bf16: bool = False  # CUDA only; off by default: it changes the paper's numerics
    channels_last: bool = False  # CUDA only (contiguous on a CPU); off by default
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)  # observes only
    stopping: StoppingConfig = field(default_factory=StoppingConfig)  # off: the paper's search


@dataclass(frozen=True)
class TrainConfig:
    """Final-network training; defaults are the CIFAR-10 evaluation of method §6."""

    epochs: int = 600  # method §6: 600 CIFAR-10, 250 ImageNet
    lr: float = 0.025  # method §6: 0.025 CIFAR-10, 0.5 ImageNet
    lr_schedule: str = "cosine"  # "cosine" CIFAR-10, "linear" ImageNet
    lr_warmup_epochs: int = 0  # 5 for ImageNet (method §6)
    momentum: float = 0.9  # method §6
    weight_decay: float = 3e-4  # method §6: 3e-4 CIFAR-10, 3e-5 ImageNet
    grad_clip: float = 5.0  # method §6
    aux_weight: float = 0.4  # auxiliary loss weight, method §6 (0 = no auxiliary loss)
    drop_path_prob: float = 0.3  # final drop path, ramped from 0 (method §6; 0 ImageNet)
    label_smoothing: float = 0.0  # 0.1 for ImageNet (method §6)
    eval_every: int = 1  # evaluate every n epochs (and after the last)
    bf16: bool = False  # CUDA only; off by default: it changes the paper's numerics
    channels_last: bool = False  # CUDA only (contiguous on a CPU); off by default


# The paper's global batches (over all processes) and the ImageNet columns of method §5-6
# (the dataclasses' defaults are the CIFAR-10 columns); the params schema
# (pipeline/config.py) and the library-only GPU check (scripts/gpu_check.py) read them here.
SEARCH_BATCH_CIFAR10 = 256  # method §5: one GTX 1080Ti
SEARCH_BATCH_IMAGENET = 1024  # method §5: 8 V100s
TRAIN_BATCH_CIFAR10 = 96  # method §6: the code's 96 (the paper says 128)
TRAIN_BATCH_IMAGENET = 1024  # method §6
# The ImageNet search: 35 warm-up epochs, lr 0.5 with 5 epochs of linear warm-up, arch lr
# 6e-3 clipped at 5 (method §5).
IMAGENET_SEARCH_LOOP = SearchConfig(
    warmup_epochs=35,
    lr=0.5,
    lr_warmup_epochs=5,
    architect=ArchitectConfig(lr=6e-3, grad_clip=5.0),
)
# The ImageNet retraining (mobile setting): 250 epochs, lr 0.5 decayed linearly after 5
# warm-up epochs, weight decay 3e-5, label smoothing 0.1, no drop path (method §6).
IMAGENET_TRAIN_LOOP = TrainConfig(
    epochs=250,
    lr=0.5,
    lr_schedule="linear",
    lr_warmup_epochs=5,
    weight_decay=3e-5,
    drop_path_prob=0.0,
    label_smoothing=0.1,
)
