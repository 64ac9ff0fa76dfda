"""Screenshot the MLflow UI comparing the two latest runs of a stage (the README's image).

    python scripts/screenshot_compare.py search@cifar10 docs/mlflow_compare.png

Serves the repository's tracking store (mlflow.db) on 127.0.0.1 and renders the
compare-runs page in headless Chromium (Debian's `chromium`), as tests/test_mlflow_ui.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.parse
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_mlflow_server import mlflow_server  # noqa: E402
from test_mlflow_ui import render  # noqa: E402


def main(stage: str, target: str) -> None:
    store = f"sqlite:///{ROOT / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("pcdarts")
    assert experiment is not None, "no pcdarts experiment: run `dvc repro` first"
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.dvc_stage = '{stage}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=2,
    )
    assert len(runs) == 2, f"need two finished runs of {stage}, found {len(runs)}"
    query = urllib.parse.urlencode(
        {
            "runs": json.dumps([r.info.run_id for r in runs]),
            "experiments": json.dumps([experiment.experiment_id]),
        }
    )
    with tempfile.TemporaryDirectory() as tmp, mlflow_server(store, Path(tmp)) as url:
        render(f"{url}/#/compare-runs?{query}", Path(tmp) / "profile", f"--screenshot={target}")
    print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
