"""The real stage commands against bad inputs and faults, in a temporary copy of the repo.

Each refusal is one line on stderr naming the file or key, exit status 1, before any data
is read or compute spent, and no declared output of any stage changes. Killed stages
resume; a truncated checkpoint is set aside; a corrupt image stops ``prepare``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from test_dvc_declarations import STAGES, _declared_outs
from test_mlflow_server import free_port

ROOT = Path(__file__).resolve().parents[1]
NO_MMDET = importlib.util.find_spec("mmdet") is None
COPIED = (
    "pcdarts",
    "stages",
    "pipeline",
    "reporting",
    "hydra_plugins",
    "detection",
    "conf",
    "dvc.yaml",
    "params.yaml",
)
DECLARED = sorted({out for stage in STAGES.values() for out in _declared_outs(stage)})
STAGE_TIMEOUT_S = 300  # one stage of the shrunken tiny profile takes ~30 s on 2 busy cores


@dataclass
class Repo:
    root: Path
    env: dict[str, str]

    def run(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *argv],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=STAGE_TIMEOUT_S,
            preexec_fn=_one_core,
        )

    def start(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_one_core,
        )

    def set_params(self, **values: object) -> None:
        """Write ``values`` (dotted keys, ``__`` for dots) into params.yaml, unchecked."""
        raw = yaml.safe_load((self.root / "params.yaml").read_text())
        for dotted, value in values.items():
            node = raw
            *parents, last = dotted.split("__")
            for part in parents:
                node = node[part]
            node[last] = value
        (self.root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    def snapshot(self) -> dict[str, str]:
        """sha256 of every file under every declared output, plus the checkpoints."""
        found: dict[str, str] = {}
        for out in [*DECLARED, ".checkpoints"]:
            path = self.root / out
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for f in files:
                found[str(f.relative_to(self.root))] = hashlib.sha256(f.read_bytes()).hexdigest()
        return found


def _one_core() -> None:
    """Stages use every core they may run on; one keeps two processes off each other."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _copy(target: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)


def _env(repo: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env.pop("PCDARTS_DEBUG", None)
    return env


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """A copy whose every declared output holds a sentinel: a stage that got past its
    checks would fail on them with another message, or change them."""
    root = tmp_path_factory.mktemp("refusals")
    _copy(root)
    for out in DECLARED:
        path = root / out
        if not Path(out).suffix:  # a folder output: data/prepared
            path = path / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"sentinel of {out}\n")
    return Repo(root, _env(root))


def _refused(
    repo: Repo, argv: tuple[str, ...], *names: str, env: dict[str, str] | None = None
) -> str:
    before = repo.snapshot()
    start = time.monotonic()
    done = repo.run(*argv, env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    err = done.stderr
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{' '.join(argv)}: "), err
    for name in names:
        assert name in err, (name, err)
    assert repo.snapshot() == before, "a declared output or checkpoint changed"
    assert not (repo.root / "mlflow.db").exists(), "an MLflow run was started"
    assert time.monotonic() - start < STAGE_TIMEOUT_S
    return err


SLOW = pytest.mark.slow  # a stage process each, ~5 s: the first cases stay in the fast suite
BAD = [  # (stage command, key, value, the rule shown)
    (("stages.search", "cifar10", "0"), "search.cifar10.loop.lr", -0.1, "must be > 0"),
    (("stages.prepare",), "prepare.cifar10.arch_fraction", 1.0, "must lie in (0, 1)"),
    (("stages.search", "imagenet", "0"), "search.imagenet.loop.epochs", 0, "must be >= 1"),
    (("stages.search", "cifar10", "0"), "search.cifar10.network.k", 3, "must divide the channels"),
    (
        ("stages.train", "cifar10", "searched"),
        "train_cifar10.loop.lr_warmup_epochs",
        10,
        "must be < ",
    ),
    (("stages.train", "imagenet", "searched"), "train_imagenet.batch_size", 63, "divisible"),
    (("stages.derive", "cifar10"), "derive.imagenet_classes", 1, "must be >= 2"),
    (("stages.report",), "seeds", [-1], "every value must lie in [0, "),
    (("stages.transfer_ssd",), "transfer_ssd.lr", 0.0, "must be > 0"),
]
FAST_CASES = 2
BAD_PARAMS = [
    pytest.param(
        *case,
        id=case[1],
        marks=[SLOW] * (i >= FAST_CASES)
        + [pytest.mark.skipif(NO_MMDET, reason="MMDetection is not installed")]
        * (case[0][0] == "stages.transfer_ssd"),
    )
    for i, case in enumerate(BAD)
]


@pytest.mark.parametrize(("argv", "key", "value", "rule"), BAD_PARAMS)
def test_a_bad_param_is_refused_before_compute(
    repo: Repo, argv: tuple[str, ...], key: str, value: object, rule: str
) -> None:
    good = (repo.root / "params.yaml").read_text()
    if key == "train_imagenet.batch_size":  # consistent alone, not with two processes
        repo.set_params(dist__nproc_per_node=2)
    repo.set_params(**{key.replace(".", "__"): value})
    try:
        err = _refused(repo, argv, f"{key} = ", rule, f"or with -S {key}=...", "change it in ")
    finally:
        (repo.root / "params.yaml").write_text(good)
    assert str(repo.root / "params.yaml") in err


@SLOW
def test_compose_refuses_a_bad_override_and_keeps_params_yaml(repo: Repo) -> None:
    good = (repo.root / "params.yaml").read_text()
    _refused(
        repo, ("stages.compose", "search.cifar10.loop.lr=-0.1"), "search.cifar10.loop.lr = -0.1"
    )
    assert (repo.root / "params.yaml").read_text() == good


def test_a_mistyped_key_in_params_yaml_names_the_key_meant_and_where_to_set_it(
    repo: Repo,
) -> None:
    good = (repo.root / "params.yaml").read_text()
    repo.set_params(search__cifar10__loop__epoch=3)  # for epochs
    try:
        _refused(
            repo,
            ("stages.search", "cifar10", "0"),
            f"{repo.root / 'params.yaml'}: search.cifar10.loop.epoch: no such key (did you mean "
            "search.cifar10.loop.epochs?); change it in conf/profile/tiny.yaml or with "
            "-S search.cifar10.loop.epochs=...",
        )
    finally:
        (repo.root / "params.yaml").write_text(good)


COMPOSE_REFUSED = [  # (override, what the one line says)
    (
        "+search.cifar10.loop.epoch=3",
        "search.cifar10.loop.epoch: no such key (did you mean search.cifar10.loop.epochs?); "
        "change it in conf/profile/tiny.yaml or with -S search.cifar10.loop.epochs=...",
    ),
    (
        "search.cifar10.loop.epochs=three",
        "search.cifar10.loop.epochs = 'three': expected an integer; change it in "
        "conf/profile/tiny.yaml or with -S search.cifar10.loop.epochs=...",
    ),
]


@SLOW
@pytest.mark.parametrize(("override", "says"), COMPOSE_REFUSED, ids=["typo", "type"])
def test_compose_refuses_a_mistyped_key_or_a_wrong_type_and_keeps_params_yaml(
    repo: Repo, override: str, says: str
) -> None:
    good = (repo.root / "params.yaml").read_text()
    _refused(repo, ("stages.compose", override), f"conf/ with overrides [{override!r}]: {says}")
    assert (repo.root / "params.yaml").read_text() == good


BACKBONE = "outputs/train_imagenet/searched/model.pt"  # transfer_ssd's one upstream checkpoint


@SLOW
@pytest.mark.skipif(NO_MMDET, reason="MMDetection is not installed")
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_transfer_ssd_names_a_missing_or_damaged_backbone_and_the_stage_that_writes_it(
    repo: Repo, damage: str
) -> None:
    backbone = repo.root / BACKBONE
    kept = backbone.read_bytes()  # a sentinel: a text file, not a checkpoint
    says: tuple[str, ...]
    if damage == "missing":
        backbone.unlink()
        says = (
            f"{backbone} is missing: it is written by the 'train_imagenet@searched' stage "
            "(dvc repro train_imagenet@searched)",
        )
    else:
        torch.save({"model": {"w": torch.arange(100_000.0)}}, backbone)
        backbone.write_bytes(backbone.read_bytes()[:100_000])
        says = (
            f"{backbone} is damaged, not a valid output of train_imagenet@searched "
            "(PytorchStreamReader failed reading zip archive",
            "rebuild it (dvc repro -f train_imagenet@searched)",
        )
    try:
        _refused(repo, ("stages.transfer_ssd",), *says)
    finally:
        backbone.write_bytes(kept)


USAGE = [  # (a command line that does not fit, what is wrong, its usage line)
    (
        ("stages.search",),
        "missing a required argument: 'dataset'",
        "usage: python -m stages.search <dataset> <seed> [<k>] (e.g. python -m stages.search "
        "cifar10 0)",
    ),
    (
        ("stages.search", "cifar10", "0", "4", "5"),
        "too many positional arguments",
        "usage: python -m stages.search <dataset> <seed> [<k>]",
    ),
    (
        ("stages.search", "cifar10", "zero"),
        "<seed> must be an integer, not 'zero'",
        "usage: python -m stages.search <dataset> <seed> [<k>]",
    ),
    (
        ("stages.train", "cifar10"),
        "missing a required argument: 'cell'",
        "usage: python -m stages.train <dataset> <cell> (e.g. python -m stages.train cifar10 "
        "searched)",
    ),
    (
        ("stages.derive",),
        "missing a required argument: 'dataset'",
        "usage: python -m stages.derive <dataset>",
    ),
    (("stages.prepare", "x"), "too many positional arguments", "usage: python -m stages.prepare"),
]


@pytest.mark.parametrize(
    ("argv", "problem", "usage"),
    [pytest.param(*case, marks=[SLOW] * (i >= 1)) for i, case in enumerate(USAGE)],
    ids=[" ".join(case[0]) for case in USAGE],
)
def test_a_missing_or_extra_argument_gives_the_stages_usage_line(
    repo: Repo, argv: tuple[str, ...], problem: str, usage: str
) -> None:
    _refused(repo, argv, f"{' '.join(argv)}: {problem}; {usage}")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            '{"normal": [["sep_conv_3x3", 0]], "normal_concat": [2, 3, 4, 5], "reduce": [], '
            '"reduce_concat": [2, 3, 4, 5]}',
            "normal has 1 [op, input] pairs, not 8",
        ),
        pytest.param('{"search/arch_top1_err": 3.1}', "lacks ['normal'", marks=SLOW),
        ("\x89PNG\r\n", "is not UTF-8 text"),
    ],
)
def test_a_bad_genotype_file_is_refused_naming_it(repo: Repo, content: str, problem: str) -> None:
    mine = repo.root / "my_cell.json"
    mine.write_bytes(content.encode("latin-1"))
    good = (repo.root / "params.yaml").read_text()
    try:
        _refused(
            repo,
            ("stages.train", "cifar10", "my_cell.json"),
            f"genotype file {mine}",
            problem,
            "Expected",
        )
    finally:
        (repo.root / "params.yaml").write_text(good)


@SLOW
def test_a_damaged_search_output_and_an_unknown_name_are_refused(repo: Repo) -> None:
    searched = repo.root / "outputs/search/cifar10/seed_0/genotype.json"  # holds a sentinel
    _refused(repo, ("stages.derive", "cifar10"), f"genotype file {searched} is not JSON")
    good = (repo.root / "params.yaml").read_text()
    try:
        _refused(
            repo,
            ("stages.train", "cifar10", "pc_darts_mnist"),
            "'pc_darts_mnist'",
            "pc_darts_cifar",
        )
    finally:
        (repo.root / "params.yaml").write_text(good)


@SLOW
def test_a_missing_upstream_output_names_the_stage_to_run(repo: Repo) -> None:
    searched = repo.root / "outputs/search/imagenet/seed_0/genotype.json"
    kept = searched.read_bytes()
    searched.unlink()
    try:
        _refused(
            repo,
            ("stages.derive", "imagenet"),
            f"{searched} is missing",
            "dvc repro search@imagenet-0",
        )
    finally:
        searched.write_bytes(kept)


def test_a_dead_tracking_server_stops_the_stage_before_compute(repo: Repo) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for argv in (("stages.search", "cifar10", "0"), ("stages.prepare",)):
        _refused(repo, argv, uri, "unreachable", env={"MLFLOW_TRACKING_URI": uri})


@SLOW
def test_the_debug_switch_shows_the_traceback(repo: Repo) -> None:
    good = (repo.root / "params.yaml").read_text()
    repo.set_params(search__cifar10__loop__lr=-0.1)
    try:
        done = repo.run("stages.search", "cifar10", "0", env={"PCDARTS_DEBUG": "1"})
    finally:
        (repo.root / "params.yaml").write_text(good)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ParamsError" in done.stderr, done.stderr


# --------------------------------------------------------------------------- with real data

TINY_TRAIN = {  # train_cifar10@random:0 (no search needed), small: ~12 s an epoch on one core
    "data__embedded__imagenet_size": 32,
    "data__embedded__coco_images_train": 8,
    "data__embedded__coco_images_val": 4,
    "train_cifar10__network__C": 4,
    "train_cifar10__network__layers": 3,
    "train_cifar10__network__auxiliary": False,
    "train_cifar10__image_size": 8,
    "train_cifar10__batch_size": 256,
    "train_cifar10__loop__epochs": 2,
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """A copy with the embedded digits prepared."""
    root = tmp_path_factory.mktemp("prepared")
    _copy(root)
    repo = Repo(root, _env(root))
    repo.set_params(**TINY_TRAIN)
    done = repo.run("stages.prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    return repo


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


@pytest.mark.slow
def test_prepare_refuses_a_corrupt_image_by_name_and_keeps_the_prepared_data(
    prepared: Repo,
) -> None:
    digits = prepared.root / "data/prepared/digits"
    real = prepared.root / "data/real"
    shutil.copytree(digits, real)
    good = (prepared.root / "params.yaml").read_text()
    roots = {f"data__{name}_root": str(real / name) for name in ("cifar10", "imagenet", "coco")}
    prepared.set_params(data__source="real", **roots)
    victims = [
        sorted((real / "imagenet/train").rglob("*.*"))[700],  # a JPEG mid-way, of class 4 or so
        sorted((real / "coco/val2017").iterdir())[2],
    ]
    try:
        for victim in victims:
            before = prepared.snapshot()
            kept = _truncate(victim)
            done = prepared.run("stages.prepare")
            victim.write_bytes(kept)
            assert done.returncode == 1, done.stdout
            err = [line for line in done.stderr.splitlines() if " INFO mlflow" not in line]
            assert len(err) == 1, done.stderr  # MLflow's own INFO lines aside
            assert err[0].startswith(f"stages.prepare: {victim}: cannot be decoded"), err
            assert "Replace or remove the file" in err[0]
            assert prepared.snapshot() == before  # the earlier prepared data is untouched
            assert not (prepared.root / "data/.prepared.partial").exists()
    finally:
        (prepared.root / "params.yaml").write_text(good)
        shutil.rmtree(real)


def _kill_after_first_checkpoint(repo: Repo) -> Path:
    """Start train_cifar10, SIGKILL it once its first epoch is checkpointed; the checkpoint."""
    folder = repo.root / ".checkpoints/train_cifar10@random:0"
    stage = repo.start("stages.train", "cifar10", "random:0")
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not list(folder.glob("*.pt")):
        assert stage.poll() is None, stage.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.2)
    os.kill(stage.pid, signal.SIGKILL)
    stage.communicate()
    (checkpoint,) = folder.glob("*.pt")
    return checkpoint


@pytest.mark.slow
def test_a_killed_stage_resumes_and_a_truncated_checkpoint_is_set_aside(prepared: Repo) -> None:
    outs = [
        prepared.root / out for out in DECLARED if out.startswith("outputs/train_cifar10/random:0/")
    ]
    checkpoint = _kill_after_first_checkpoint(prepared)
    assert not any(out.exists() for out in outs), "a killed stage wrote an output"
    assert not list((prepared.root / "outputs").rglob(".*.tmp"))
    good = _truncate(checkpoint)

    done = prepared.run(
        "stages.train", "cifar10", "random:0"
    )  # the truncated one: set aside, from scratch
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checkpoint {checkpoint} cannot be loaded" in done.stderr
    assert (checkpoint.parent / f"{checkpoint.name}.corrupt-1").is_file()
    assert "resuming" not in done.stdout and all(out.is_file() for out in outs)
    assert not checkpoint.exists()  # finished: nothing left to resume

    checkpoint.write_bytes(good)  # the intact epoch-1 state, as the killed run left it
    done = prepared.run("stages.train", "cifar10", "random:0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming train_cifar10@random:0 after epoch 1" in done.stdout, done.stdout
    curves = json.loads((prepared.root / "outputs/train_cifar10/random:0/curves.json").read_text())
    assert [c["epoch"] for c in curves] == [0, 1]  # the resumed run's history holds both
    assert not list((prepared.root / "outputs").rglob(".*.tmp"))
