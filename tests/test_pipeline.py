"""The whole DVC pipeline, shrunken, in a temporary copy of the repository.

One module-scoped run of ``dvc repro`` (tiny profile, still smaller networks and one or
two epochs; the real code path: embedded digits in the CIFAR-10 / ImageNet / COCO
formats, search, derive, training), then what a DVC and MLflow user relies on: a second
repro does nothing; a search param reruns exactly that search and its downstream, and
changing it back restores from the run cache; ``dvc push`` / ``dvc pull`` give a second
clone every output with nothing to rerun; one MLflow run per stage, shown by the UI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
import yaml
from test_dvc_declarations import STAGES
from test_mlflow_server import mlflow_server
from test_mlflow_ui import CHROMIUM, render

from pipeline import kernels

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHRINK = [  # tiny profile, smaller still: seconds per stage
    "data.embedded.imagenet_size=32",
    "data.embedded.coco_images_train=8",
    "data.embedded.coco_images_val=4",
    *(
        f"search.{d}.{k}"
        for d in ("cifar10", "imagenet")
        for k in (
            "network.C=4",
            "network.layers=3",
            "batch_size=256",
            "loop.epochs=2",
            "loop.warmup_epochs=1",
        )
    ),
    "search.cifar10.image_size=8",
    "search.imagenet.loop.lr_warmup_epochs=0",
    *(
        f"train_{d}.{k}"
        for d in ("cifar10", "imagenet")
        for k in (
            "network.auxiliary=false",
            "batch_size=256",
            "loop.epochs=1",
            "loop.lr_warmup_epochs=0",
        )
    ),
    # train_imagenet keeps the tiny network: the tiny SSD config is built for its channels
    "seeds=[0,1]",  # one extra seed, one extra K, the random cells: every family, small
    "k_values=[2]",  # with the main search, K = 4: the K table has two rows
    "train_cifar10.network.C=4",
    "train_cifar10.network.layers=3",
    "train_cifar10.image_size=8",
    "derive.cifar_network.layers=5",  # counted at 32x32 / 224x224 all the same
    "derive.imagenet_network.layers=5",
    "transfer_ssd.epochs=1",
    "transfer_ssd.batch_size=4",
    "transfer_ssd.val_interval=1",
    "transfer_ssd.log_interval=1",
]
SEARCH_PARAM = "search.cifar10.loop.lr"


@dataclass
class Pipeline:
    repo: Path
    env: dict[str, str]
    first: str  # output of the first dvc repro

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            args, cwd=cwd or self.repo, env=self.env, capture_output=True, text=True
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
        return output

    def compose(self, *overrides: str) -> None:
        self.run("python", "-m", "stages.compose", *SHRINK, *overrides)


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def restored(output: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' is cached", output))


def _copy_repo(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not name.startswith("dvc.lock"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    base = tmp_path_factory.mktemp("pipeline")
    repo = base / "repo"  # the configured remote ../../pcdarts-dvc-storage lands in base
    _copy_repo(repo)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    p = Pipeline(repo, env, "")
    p.run("git", "init", "-q")
    p.compose()
    p.run("git", "add", "-A")
    p.run("git", "commit", "-qm", "copy")
    p.first = p.run("dvc", "repro")
    p.run("git", "add", "-A")
    p.run("git", "commit", "-qm", "repro")
    yield p


def test_first_repro_runs_every_stage_and_writes_every_output(pipeline: Pipeline) -> None:
    assert ran(pipeline.first) == set(STAGES)
    for stage in STAGES.values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            path = pipeline.repo / (next(iter(entry)) if isinstance(entry, dict) else entry)
            assert path.exists(), path
    assert not list(pipeline.repo.glob("**/.*.tmp")), "a temporary file was left behind"


def test_dvc_plots_show_draws_every_plot_without_an_error(pipeline: Pipeline) -> None:
    """Every plot dvc.yaml declares, the top-level panels and each stage's, renders: no
    file missing, no key a panel asks for absent from its rows."""
    shown = json.loads(pipeline.run("dvc", "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    declared = {
        next(iter(entry))
        for entry in yaml.safe_load((pipeline.repo / "dvc.yaml").read_text())["plots"]
    }
    assert declared <= set(shown["data"]), declared - set(shown["data"])
    for name, panels in shown["data"].items():
        assert panels and all(panel.get("content") for panel in panels), name


COMPUTING = ("search", "search_k", "train_cifar10", "train_imagenet", "transfer_ssd")
PINNED = "avx2" if kernels.can_pin() else "native"  # what `runtime.cpu_kernels: avx2` gives


def _runtime(pipeline: Pipeline, stage: str) -> dict[str, object]:
    (metrics,) = [m for m in STAGES[stage].get("metrics", []) if "metrics" in str(m)]
    path = next(iter(metrics)) if isinstance(metrics, dict) else metrics
    record: dict[str, object] = json.loads((pipeline.repo / path).read_text())["runtime"]
    return record


def test_every_computing_stage_ran_on_pinned_kernels_and_says_so(pipeline: Pipeline) -> None:
    """`dvc repro` started every stage with the kernels pinned before torch loaded."""
    stages = [s for s in STAGES if s.split("@")[0] in COMPUTING]
    assert len(stages) >= 5
    for stage in stages:
        record = _runtime(pipeline, stage)
        assert record["cpu_kernels"] == PINNED and record["configured"] == "avx2", (stage, record)
        if PINNED == "avx2":
            assert record["cpu_capability"] == "AVX2", (stage, record)


def test_second_repro_changes_nothing(pipeline: Pipeline) -> None:
    out = pipeline.run("dvc", "repro")
    assert ran(out) == set() and restored(out) == set(), out
    assert "up to date" in pipeline.run("dvc", "status")


def test_a_search_param_reruns_its_downstream_and_the_run_cache_restores(
    pipeline: Pipeline,
) -> None:
    before = (pipeline.repo / "outputs/search/cifar10/seed_0/genotype.json").read_text()
    downstream = {
        "search@cifar10-0",
        "search@cifar10-1",  # the same search params, another seed
        "search_k@2",
        "derive@cifar10",
        "train_cifar10@searched",
        "train_cifar10@random:0",  # a matrix declares one dep list: the searched genotype
        "train_cifar10@random:1",
        "train_cifar10@random:2",
        "train_imagenet@searched",  # the same: both searched genotypes; its model is unchanged
        "train_imagenet@searched:cifar10",
        # the retrained network is the same tensors, but torch.save writes a new
        # serialisation id, so its file hash changes and the SSD reruns too
        "transfer_ssd",
        "report",
    }
    pipeline.compose(f"{SEARCH_PARAM}=0.05")
    changed = pipeline.run("dvc", "repro")
    assert ran(changed) == downstream, changed
    pipeline.compose()
    back = pipeline.run("dvc", "repro")
    assert ran(back) == set(), back
    assert restored(back) == downstream, back
    assert (pipeline.repo / "outputs/search/cifar10/seed_0/genotype.json").read_text() == before
    assert "up to date" in pipeline.run("dvc", "status")


def test_torchrun_two_processes_write_once_and_count_both(pipeline: Pipeline) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{pipeline.repo / 'mlflow.db'}")
    runs_before = len(client.search_runs([_experiment_id(client)]))
    pipeline.compose("dist.nproc_per_node=2")
    out = pipeline.run("dvc", "repro", "search@cifar10-0")
    assert ran(out) == {"search@cifar10-0"}, out
    metrics = json.loads((pipeline.repo / "outputs/search/cifar10/seed_0/metrics.json").read_text())
    assert metrics["cost"]["device_count"] == 2  # device-days count every process
    assert metrics["runtime"]["cpu_kernels"] == PINNED  # torchrun's children inherit the pin
    runs = client.search_runs([_experiment_id(client)], order_by=["attributes.start_time DESC"])
    assert len(runs) == runs_before + 1  # rank 0 only
    assert (
        runs[0].data.tags["dvc_stage"] == "search@cifar10-0" and runs[0].info.status == "FINISHED"
    )
    # SSD through MMEngine's `pytorch` launcher (this stage alone: -s keeps the upstream).
    out = pipeline.run("dvc", "repro", "-s", "transfer_ssd")
    assert ran(out) == {"transfer_ssd"}, out
    metrics = json.loads((pipeline.repo / "outputs/transfer_ssd/metrics.json").read_text())
    assert metrics["cost"]["device_count"] == 2
    runs = client.search_runs([_experiment_id(client)], order_by=["attributes.start_time DESC"])
    assert len(runs) == runs_before + 2
    assert runs[0].data.tags["dvc_stage"] == "transfer_ssd" and runs[0].info.status == "FINISHED"
    assert "coco/bbox_mAP_50" in runs[0].data.metrics
    assert not (pipeline.repo / ".dist_test").exists()  # detections gathered without files
    assert not list(pipeline.repo.glob("outputs/**/.*.tmp"))
    assert not (pipeline.repo / ".checkpoints/transfer_ssd").exists() or not any(
        (pipeline.repo / ".checkpoints/transfer_ssd").iterdir()
    )  # the finished run's work folder is gone
    pipeline.compose()
    back = pipeline.run("dvc", "repro")
    assert ran(back) == set(), back


def test_dvc_exp_run_pins_too_and_the_kernels_switch_reruns_the_stage(pipeline: Pipeline) -> None:
    """`runtime.cpu_kernels` is a declared param: native reruns the search on the CPU's own
    kernels; back on avx2 (forced, so it really runs) the search gives the first run's bits."""
    metrics_file = pipeline.repo / "outputs/search/cifar10/seed_0/metrics.json"
    first = json.loads(metrics_file.read_text())
    shrink = [arg for override in SHRINK for arg in ("-S", override)]  # -S composes anew
    out = pipeline.run(
        "dvc", "exp", "run", *shrink, "-S", "runtime.cpu_kernels=native", "search@cifar10-0"
    )
    assert ran(out) == {"search@cifar10-0"}, out
    native = _runtime(pipeline, "search@cifar10-0")
    assert native["cpu_kernels"] == "native" and native["configured"] == "native", native
    out = pipeline.run(
        "dvc", "exp", "run", "-f", *shrink, "-S", "runtime.cpu_kernels=avx2", "search@cifar10-0"
    )
    assert ran(out) == {"prepare", "search@cifar10-0"}, out  # -f reruns the upstream too
    again = json.loads(metrics_file.read_text())
    assert again["runtime"]["cpu_kernels"] == PINNED
    same = [k for k in first if k.startswith("search/")]
    assert same and {k: again[k] for k in same} == {k: first[k] for k in same}
    client = mlflow.MlflowClient(f"sqlite:///{pipeline.repo / 'mlflow.db'}")
    runs = client.search_runs([_experiment_id(client)], order_by=["attributes.start_time DESC"])
    run = runs[0]
    assert run.data.params["runtime.cpu_kernels"] == PINNED
    # The workspace as the tests after this one expect it: the committed dvc.lock and its
    # outputs (the experiments reran prepare and the search: new MLflow run ids, new wall
    # times), else `dvc push` would push outputs that the committed dvc.lock does not name.
    pipeline.run("git", "checkout", "--", ".")
    pipeline.run("dvc", "checkout", "--force")
    assert "up to date" in pipeline.run("dvc", "status")


def _experiment_id(client: mlflow.MlflowClient) -> str:
    experiment = client.get_experiment_by_name("pcdarts")
    assert experiment is not None
    return experiment.experiment_id


def test_push_then_pull_lets_a_second_clone_skip_every_stage(pipeline: Pipeline) -> None:
    pipeline.run("dvc", "push")
    clone = pipeline.repo.parent / "clone"
    pipeline.run("git", "clone", "-q", str(pipeline.repo), str(clone))
    pipeline.run("dvc", "pull", cwd=clone)
    assert "up to date" in pipeline.run("dvc", "status", cwd=clone)
    out = pipeline.run("dvc", "repro", cwd=clone)
    assert ran(out) == set() and restored(out) == set(), out
    assert (clone / "outputs/train_imagenet/searched/model.pt").is_file()


# A metric every run of the stage logs, to find on the MLflow page.
STAGE_METRIC = {
    "prepare": "data/cifar10/train_images",
    "search": "search/alpha_entropy",
    "derive": "model/imagenet/macs_m",
    "train_cifar10": "test/top1_err",
    "train_imagenet": "test/top5_err",
    "search_k": "search/alpha_entropy",
    "transfer_ssd": "coco/bbox_mAP_50",
    "report": "report/cifar10_test_top1_err",
}


def _stage_runs(pipeline: Pipeline) -> dict[str, mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{pipeline.repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pcdarts")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    first: dict[str, mlflow.entities.Run] = {}
    for run in runs:  # later runs come from the param-change test
        first.setdefault(run.data.tags["dvc_stage"], run)
    return first


def test_one_mlflow_run_per_stage_with_params_metrics_tags_artifacts(pipeline: Pipeline) -> None:
    runs = _stage_runs(pipeline)
    assert set(runs) == set(STAGES)
    client = mlflow.MlflowClient(f"sqlite:///{pipeline.repo / 'mlflow.db'}")
    for name, run in runs.items():
        stage = name.split("@")[0]
        assert run.info.status == "FINISHED", name
        assert STAGE_METRIC[stage] in run.data.metrics, (name, sorted(run.data.metrics))
        assert run.data.params["profile"] == "tiny"
        seed = name.split("-")[-1] if name.startswith("search@") else "0"
        assert run.data.params["seed"] == seed
        assert run.data.tags["git_commit"], name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        expected = {
            "prepare": {"manifest.json"},
            "search": {"genotype.json", "history.json", "metrics.json"},
            "derive": {"normal.png", "reduction.png", "counts.json"},
            # the model is a LoggedModel (MLflow 3), loaded through runs:/<id>/model below
            "train_cifar10": {"metrics.json", "genotype.json"},
            "train_imagenet": {"metrics.json", "genotype.json"},
            "search_k": {"genotype.json", "history.json", "metrics.json"},
            "transfer_ssd": {"metrics.json"},
            "report": {"report"},
        }[stage]
        assert expected <= artifacts, (name, artifacts)
        if stage != "prepare":  # lineage: the run ids of the runs it consumed
            assert run.data.tags["upstream_run_ids"], name
    search = runs["search@cifar10-0"]
    assert runs["train_cifar10@searched"].data.tags["upstream_run_ids"] == search.info.run_id
    history = client.get_metric_history(search.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1]  # per epoch
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{pipeline.repo / 'mlflow.db'}")
    try:
        trained = runs["train_cifar10@searched"].info.run_id
        model = mlflow.pytorch.load_model(f"runs:/{trained}/model")
    finally:
        mlflow.set_tracking_uri(previous)
    assert tuple(model(torch.zeros(2, 3, 8, 8)).shape) == (2, 10)  # any batch, logits only


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_the_mlflow_ui_shows_every_stage_run_and_a_metric_of_each(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    runs = _stage_runs(pipeline)
    experiment = next(iter(runs.values())).info.experiment_id
    one_per_stage = {name.split("@")[0]: run for name, run in runs.items()}
    with mlflow_server(f"sqlite:///{pipeline.repo / 'mlflow.db'}", tmp_path) as url:
        listing = render(f"{url}/#/experiments/{experiment}/runs", tmp_path / "profile")
        pages = {
            stage: render(
                f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}", tmp_path / "profile"
            )
            for stage, run in one_per_stage.items()
        }
    for run in runs.values():
        assert run.info.run_name in listing, f"{run.info.run_name} not listed: {listing[:2000]}"
    for stage, page in pages.items():
        assert STAGE_METRIC[stage] in page, f"{STAGE_METRIC[stage]} not on {stage}'s run page"


def test_the_report_tables_are_the_stage_metrics_and_figures_are_pngs(pipeline: Pipeline) -> None:
    from PIL import Image

    repo = pipeline.repo
    summary = json.loads((repo / "reports/summary.json").read_text())
    tables = summary["tables"]
    cifar = json.loads((repo / "outputs/train_cifar10/searched/metrics.json").read_text())
    assert tables["CIFAR-10"]["CIFAR-10 test error"]["ours"] == cifar["test/top1_err"]
    assert tables["CIFAR-10"]["CIFAR-10 test error"]["paper"] == 2.57
    for cell, title in (("cifar10", "CIFAR-searched"), ("imagenet", "ImageNet-searched")):
        trained_cell = "searched" if cell == "imagenet" else f"searched:{cell}"
        metrics = repo / f"outputs/train_imagenet/{trained_cell}/metrics.json"
        trained = json.loads(metrics.read_text())
        counts = json.loads((repo / f"outputs/derive/{cell}/counts.json").read_text())
        table = tables[f"ImageNet, {title} cell"]
        assert table["top-1 error"]["ours"] == trained["test/top1_err"]
        assert table["top-5 error"]["ours"] == trained["test/top5_err"]
        assert table["mult-adds, paper convention (+BN, ReLU)"]["ours"] == counts["imagenet/macs_m"]
    markdown = (repo / "reports/results.md").read_text()
    assert "Not a paper-scale result" in markdown and "tiny, digits" in markdown
    assert f"{cifar['test/top1_err']:.4g}" in markdown
    assert "<table>" in (repo / "reports/results.html").read_text()
    for png in (repo / "reports").rglob("*.png"):
        assert png.stat().st_size > 10_000, png
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) >= 300, (png, image.size)
    assert f"({png.relative_to(repo / 'reports')})" in markdown
