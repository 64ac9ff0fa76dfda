"""The MLflow UI, served from a pipeline-like store, shows each stage's run and metric.

Headless Chromium renders the single-page app; skipped where no Chromium is installed
(CI installs Debian's ``chromium``). Set ``PCDARTS_SCREENSHOT=<file.png>`` to keep a
screenshot of the run comparison (the README's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from test_mlflow_server import mlflow_server  # tests/ is on sys.path (pytest's rootdir import)

from pipeline.tracking import stage_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RENDER_BUDGET_MS = 15_000  # virtual time for the app to fetch and draw its runs


def render(url: str, profile: Path, *output: str) -> str:
    """Chromium's DOM of ``url`` after the render budget, as visible text (tags stripped)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={RENDER_BUDGET_MS}",
        "--window-size=1400,900",
        "--dump-dom",
        *output,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", done.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium or chromium-browser on PATH (apt-get install chromium)"
)
def test_the_ui_shows_each_stage_run_and_its_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    runs = [  # two searches to compare (K=2 against K=4), then a retraining
        ("search", {"search": {"k": 2}}, "val/top1_err", 0.31),
        ("search", {"search": {"k": 4}}, "val/top1_err", 0.29),
        ("train", {"train": {"epochs": 600}}, "test/top1_err", 0.27),
    ]
    ids = []
    for stage, params, metric, value in runs:
        with stage_run(
            stage,
            params=params,
            profile="tiny",
            seed=0,
            repo_root=tmp_path,
            tracking_uri=store,
            experiment="ui",
            dataset="cifar10",
        ) as tracker:
            tracker.log_metrics({metric: value + 0.1}, 0)
            tracker.log_metrics({metric: value}, 1)
        ids.append(tracker.run_id)
    experiment = f"#/experiments/{tracker.experiment_id}"
    screenshot = tmp_path / "compare.png"

    with mlflow_server(store, tmp_path) as url:
        listing = render(f"{url}/{experiment}/runs", tmp_path / "profile")
        query = urllib.parse.urlencode(
            {"runs": json.dumps(ids[:2]), "experiments": json.dumps([tracker.experiment_id])}
        )
        searches = render(
            f"{url}/#/compare-runs?{query}", tmp_path / "profile", f"--screenshot={screenshot}"
        )
        training = render(f"{url}/{experiment}/runs/{ids[2]}", tmp_path / "profile")

    for name in ("search:cifar10", "train:cifar10"):
        assert name in listing, f"run {name!r} not on the runs page: {listing[:2000]}"
    for needle in ("search.k", "val/top1_err", "0.31", "0.29"):
        assert needle in searches, f"{needle!r} not on the comparison: {searches[:2000]}"
    for needle in ("train:cifar10", "test/top1_err", "0.27"):
        assert needle in training, f"{needle!r} not on the run page: {training[:2000]}"
    assert screenshot.stat().st_size > 10_000  # a drawn page, not a blank one
    if target := os.environ.get("PCDARTS_SCREENSHOT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target)
