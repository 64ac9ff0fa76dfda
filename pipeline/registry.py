"""The MLflow Model Registry edge: a trained network becomes a version of a registered model.

``train_<dataset>@<cell>`` logs its network (``MlflowTracker.log_model``, a LoggedModel in
MLflow 3) and registers it as a new version of ``<experiment>-<dataset>``
(``pcdarts-cifar10``, ``pcdarts-imagenet``): its genotype, test errors and parameters, and
its run's lineage tags (DVC stage, git commit, upstream runs) as version tags; and aliases
that a team picks it by, in the UI or as ``models:/pcdarts-imagenet@ssd-backbone``: the cell
(``searched``, ``random-0``, ``searched-cifar10``) and, for the network ``transfer_ssd``
builds on, ``ssd-backbone``. An alias moves to the newest version of its cell.

Like ``pipeline/tracking.py`` this only observes (``pipeline/dvc_deps.py``'s OBSERVERS): no
result depends on it, and a registry that fails warns and the stage goes on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

from pipeline.config import SEARCHED

# Version tags copied from the run that trained the model (pipeline/tracking.py sets them).
LINEAGE_TAGS = ("dvc_stage", "git_commit", "git_dirty", "profile", "upstream_run_ids")
# Final metrics of a training kept as version tags, where the run has them (top-5: ImageNet);
# the errors also go into the version's description.
ERROR_METRICS = ("test/top1_err", "test/top5_err")
REGISTERED_METRICS = (*ERROR_METRICS, "model/params_m")
# transfer_ssd's backbone is train_imagenet@searched (stages/transfer_ssd.py): its alias.
SSD_BACKBONE = ("imagenet", SEARCHED)
SSD_BACKBONE_ALIAS = "ssd-backbone"
# MLflow's rules for an alias: word characters and dashes; "latest" and v<n> are reserved.
ALIAS_CHARS = re.compile(r"[^\w-]")
RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
# What MLflow answers to creating a registered model that exists (its REST and SQL stores).
EXISTS = {ErrorCode.Name(code) for code in (RESOURCE_ALREADY_EXISTS, ALREADY_EXISTS)}


@dataclass(frozen=True)
class Registration:
    """What a trained network is registered as: model name, aliases, version tags."""

    name: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    description: str


def registered_model_name(experiment: str, dataset: str) -> str:
    """``pcdarts-cifar10``: one registered model per experiment (study) and dataset."""
    return f"{experiment}-{dataset}"


def cell_alias(cell: str) -> str:
    """The alias of a cell spec: ``random:0`` -> ``random-0`` (MLflow allows no colon)."""
    alias = ALIAS_CHARS.sub("-", cell)
    return f"cell-{alias}" if RESERVED_ALIAS.match(alias) else alias


def registration(
    experiment: str,
    dataset: str,
    cell: str,
    genotype: Mapping[str, Any],
    metrics: Mapping[str, float],
) -> Registration:
    """The registration of ``train_<dataset>@<cell>``'s network, given its genotype (as
    ``Genotype.to_dict()``) and final metrics."""
    aliases = [cell_alias(cell)]
    if (dataset, cell) == SSD_BACKBONE:
        aliases.append(SSD_BACKBONE_ALIAS)
    tags = {"dataset": dataset, "cell": cell, "genotype": json.dumps(genotype, sort_keys=True)}
    tags |= {key: f"{metrics[key]:.6g}" for key in REGISTERED_METRICS if key in metrics}
    errors = ", ".join(f"{key} {metrics[key]:.2f}%" for key in ERROR_METRICS if key in metrics)
    description = f"PC-DARTS network trained on {dataset} from the {cell} cell ({errors})"
    name = registered_model_name(experiment, dataset)
    return Registration(name, tuple(aliases), tags, description)


def register_model_version(
    client: MlflowClient, model_id: str, run_id: str, registration: Registration
) -> ModelVersion:
    """A new version of ``registration.name`` (created if new) from the logged model
    ``model_id`` of run ``run_id``, tagged with the run's lineage, its aliases moved to it."""
    try:
        client.create_registered_model(
            registration.name,
            description="PC-DARTS final networks; pick one by alias (the cell it was trained from)",
        )
    except MlflowException as error:  # registered before, or by a parallel stage meanwhile
        if error.error_code not in EXISTS:
            raise
    run_tags = client.get_run(run_id).data.tags
    lineage = {key: run_tags[key] for key in LINEAGE_TAGS if key in run_tags}
    version = client.create_model_version(
        registration.name,
        source=f"models:/{model_id}",
        run_id=run_id,
        tags={**lineage, **registration.tags},
        description=registration.description,
        await_creation_for=0,  # MLflow's own stores create a version READY at once
        model_id=model_id,
    )
    for alias in registration.aliases:
        client.set_registered_model_alias(registration.name, alias, version.version)
    return version
