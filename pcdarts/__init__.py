"""PC-DARTS: partial channel connections for memory-efficient architecture search.

A pure library: no tracking, no file writes, no work at import time.
"""

from pcdarts.architect import Architect
from pcdarts.config import ArchitectConfig, SearchConfig, TrainConfig
from pcdarts.counting import count_macs, count_params
from pcdarts.derivation import derive_genotype, edge_weights
from pcdarts.errors import MissingInputError, UserError
from pcdarts.genotypes import GENOTYPES, Genotype, GenotypeError, get_genotype, load_genotype
from pcdarts.models import create_model, list_models
from pcdarts.network import Network, NetworkConfig, NetworkOutput
from pcdarts.ops import OPS, PRIMITIVES
from pcdarts.supernet import MixedOp, Supernet, SupernetConfig, channel_shuffle

__all__ = [
    "GENOTYPES",
    "OPS",
    "PRIMITIVES",
    "Architect",
    "ArchitectConfig",
    "Genotype",
    "GenotypeError",
    "MissingInputError",
    "MixedOp",
    "Network",
    "NetworkConfig",
    "NetworkOutput",
    "SearchConfig",
    "Supernet",
    "SupernetConfig",
    "TrainConfig",
    "UserError",
    "channel_shuffle",
    "count_macs",
    "count_params",
    "create_model",
    "derive_genotype",
    "edge_weights",
    "get_genotype",
    "list_models",
    "load_genotype",
]
