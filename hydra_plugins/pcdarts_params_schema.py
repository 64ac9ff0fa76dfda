"""Hydra finds this module when DVC composes params.yaml (`dvc exp run -S ...`): DVC scans
``hydra_plugins`` under its ``hydra.plugins_path`` (the repository root by default), and
importing the schema registers it in the ConfigStore, conf/config.yaml's first default."""

from pipeline.config import register_schema

register_schema()
