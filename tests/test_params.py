"""Values of params.yaml: every number has a range, and a value outside it (or two values
that disagree) is refused at load with the full key, the value, the rule and where to fix it."""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline.config as config
from pcdarts.errors import UserError
from pipeline.config import Params, ParamsError, load_params, section, validate
from pipeline.param_rules import RANGES, cell_channels, leaves
from stages.compose import compose_params

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def _numeric(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(_numeric(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_every_number_has_a_range_and_every_range_a_key() -> None:
    keys = [key for key, value in leaves(Params()) if _numeric(value) or value is None]
    unchecked = [k for k in keys if not any(fnmatchcase(k, pattern) for pattern, _ in RANGES)]
    assert unchecked == []
    all_keys = [key for key, _ in leaves(Params())]
    dead = [p for p, _ in RANGES if not any(fnmatchcase(k, p) for k in all_keys)]
    assert dead == []


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_both_profiles_pass(profile: str) -> None:
    assert isinstance(validate(compose_params([f"profile={profile}"])), Params)


def _with(key: str, value: Any) -> dict[str, Any]:
    return _with_raw(copy.deepcopy(RAW), key, value)


BAD = [  # (key, value, rule, file the message points to: the tiny profile, else the schema)
    ("search.cifar10.loop.lr", -0.1, "must be > 0", "pipeline/config.py"),
    ("train_cifar10.loop.lr", float("inf"), "must be > 0", "conf/profile/tiny.yaml"),
    ("train_cifar10.loop.weight_decay", float("nan"), "must be >= 0", "pipeline/config.py"),
    ("search.imagenet.loop.lr", 0.0, "must be > 0", "conf/profile/tiny.yaml"),
    ("train_cifar10.loop.epochs", 0, "must be >= 1", "conf/profile/tiny.yaml"),
    ("search.cifar10.loop.architect.lr", -1e-3, "must be > 0", "conf/profile/tiny.yaml"),
    ("search.imagenet.batch_size", 0, "must be >= 1", "conf/profile/tiny.yaml"),
    ("prepare.cifar10.arch_fraction", 1.0, "must lie in (0, 1)", "pipeline/config.py"),
    ("prepare.imagenet.weight_fraction", 1.5, "must lie in (0, 1]", "conf/profile/tiny.yaml"),
    ("data.embedded.test_fraction", 0.0, "must lie in (0, 1)", "pipeline/config.py"),
    ("train_imagenet.loop.label_smoothing", 1.0, "must lie in [0, 1)", "pipeline/config.py"),
    ("train_cifar10.loop.drop_path_prob", -0.1, "must lie in [0, 1)", "conf/profile/tiny.yaml"),
    ("search.cifar10.loop.momentum", 1.2, "must lie in [0, 1)", "pipeline/config.py"),
    (
        "search.cifar10.loop.architect.betas",
        [0.5, 1.0],
        "every value must lie",
        "pipeline/config.py",
    ),
    ("search.imagenet.loop.architect.grad_clip", 0.0, "must be null or > 0", "pipeline/config.py"),
    ("search.cifar10.loop.lr_schedule", "step", "must be one of 'cosine'", "pipeline/config.py"),
    ("search.cifar10.network.layers", 2, "must be >= 3", "conf/profile/tiny.yaml"),
    ("data.num_workers", -1, "must be >= 0", "conf/profile/tiny.yaml"),
    ("data.source", "web", "must be one of 'embedded', 'real'", "conf/profile/tiny.yaml"),
    ("device", "gpu", "must be auto, cpu, cuda or cuda:N", "conf/profile/tiny.yaml"),
    ("seed", -1, "must lie in [0, 4294967296)", "pipeline/config.py"),
    ("seeds", [1, -2], "every value must lie in [0, 4294967296)", "conf/profile/tiny.yaml"),
    ("train_imagenet.color_jitter", [0.4, 0.4], "must be [] or 4 values", "conf/profile/tiny.yaml"),
    ("transfer_ssd.val_interval", 0, "must be >= 1", "conf/profile/tiny.yaml"),
    ("derive.imagenet_classes", 1, "must be >= 2", "pipeline/config.py"),
    ("dist.nproc_per_node", 0, "must be >= 1", "pipeline/config.py"),
    ("report.paper.ssd_coco_ap", -28.9, "must be >= 0", "pipeline/config.py"),
    ("data.embedded.coco_categories", 20, "must be 10 (the digits) or 80", "pipeline/config.py"),
]


@pytest.mark.parametrize(("key", "value", "rule", "conf"), BAD, ids=[b[0] for b in BAD])
def test_a_value_out_of_range_names_key_value_rule_and_where(
    key: str, value: Any, rule: str, conf: str
) -> None:
    with pytest.raises(ParamsError) as info:
        validate(_with(key, value), "params.yaml")
    message = str(info.value)
    shown = value if isinstance(value, int | float) else repr(value)
    assert message.startswith(f"params.yaml: {key} = {shown}: {rule}"), message
    assert message.endswith(f"; change it in {conf} or with -S {key}=..."), message
    assert "\n" not in message and isinstance(info.value, UserError)


INCONSISTENT = [  # (overrides, key named, rule)
    ({"search.cifar10.loop.warmup_epochs": 10}, "search.cifar10.loop.warmup_epochs", "must be < "),
    ({"search.imagenet.network.k": 3}, "search.imagenet.network.k", "must divide the channels"),
    ({"search.cifar10.network.C": 6}, "search.cifar10.network.k", "[6, 12, 24]"),
    ({"train_imagenet.loop.lr_warmup_epochs": 20}, "train_imagenet.loop.lr_warmup_epochs", "< "),
    ({"search.cifar10.loop.lr_min": 0.2}, "search.cifar10.loop.lr_min", "must be <= "),
    (
        {"prepare.imagenet.weight_fraction": 0.8},
        "prepare.imagenet.arch_fraction_per_class",
        "must be <= 1 (per class)",
    ),
    ({"seeds": [1, 2]}, "seeds", "must hold seed = 0"),
    ({"k_values": [2, 3]}, "k_values", "every K must divide the channels"),
    ({"k_values": [2, 4]}, "k_values", "must not hold search.cifar10.network.k = 4"),
    ({"dist.nproc_per_node": 3}, "search.cifar10.batch_size", "divisible by the 3 processes"),
    (
        {"dist.nproc_per_node": 2, "train_cifar10.batch_size": 63},
        "train_cifar10.batch_size",
        "divisible by the 2 processes",
    ),
    ({"dist.nnodes": 2}, "dist.rdzv_endpoint", "must be host:port"),
    (
        {"data.embedded.imagenet_classes": 1000},
        "data.embedded.imagenet_classes",
        "must be 10 when every digit is written once",
    ),
    (
        {"data.embedded.imagenet_val_per_class": 2},
        "data.embedded.imagenet_train_per_class",
        "must be both 0 or both >= 1",
    ),
]


@pytest.mark.parametrize(("overrides", "key", "rule"), INCONSISTENT)
def test_values_that_disagree_name_the_key_to_change(
    overrides: dict[str, Any], key: str, rule: str
) -> None:
    raw = copy.deepcopy(RAW)
    for k, v in overrides.items():
        raw = _with_raw(raw, k, v)
    with pytest.raises(ParamsError, match=f"params.yaml: {key} = ") as info:
        validate(raw, "params.yaml")
    assert rule in str(info.value) and f"-S {key}=..." in str(info.value), str(info.value)


def _with_raw(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return raw


def test_cell_channels_double_at_the_reductions() -> None:
    assert cell_channels(8, 5) == [8, 16, 16, 32, 32]
    assert cell_channels(16, 8) == [16, 16, 32, 32, 32, 64, 64, 64]


def test_load_params_refuses_a_bad_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with("train_cifar10.loop.lr", -0.5)))
    with pytest.raises(ParamsError, match=f"^{path}: train_cifar10.loop.lr = -0.5: must be > 0"):
        load_params(path)
    path.write_text("- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(path)


def test_a_mistyped_stage_argument_names_the_known_sections() -> None:
    p = load_params()
    assert section(p, "search.cifar10") is p.search.cifar10
    with pytest.raises(ParamsError, match="no section 'search.mnist'; known here: cifar10, imag"):
        section(p, "search.mnist")


def test_broken_yaml_and_a_wrong_type_are_one_line_naming_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nsearch: [unclosed\n")
    with pytest.raises(ParamsError, match=f"^{path} is not valid YAML \\(line 3\\): expected"):
        load_params(path)
    path.write_text(yaml.safe_dump(_with("search.cifar10.loop.lr", "abc")))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == (
        f"{path}: search.cifar10.loop.lr = 'abc': expected a number; change it in "
        "pipeline/config.py or with -S search.cifar10.loop.lr=..."
    )


UNKNOWN = [  # (a key the schema lacks, the key named, the key it likely meant, where set)
    ("search.cifar10.loop.epoch", None, "search.cifar10.loop.epochs", "conf/profile/tiny.yaml"),
    ("train_cifar10.loop.lr_shedule", None, "train_cifar10.loop.lr_schedule", "pipeline/config.py"),
    ("data.hflip", None, "data.augment.hflip", "conf/profile/tiny.yaml"),  # a level too high
    ("search.cifar10.epochs", None, "search.cifar10.loop.epochs", "conf/profile/tiny.yaml"),
    ("search.cifar100.loop.lr", "search.cifar100", "search.cifar10", "conf/profile/tiny.yaml"),
]


@pytest.mark.parametrize(("key", "named", "meant", "where"), UNKNOWN, ids=[u[0] for u in UNKNOWN])
def test_an_unknown_key_names_the_key_it_likely_meant_and_where_to_set_it(
    key: str, named: str | None, meant: str, where: str
) -> None:
    with pytest.raises(ParamsError) as info:
        validate(_with_new(key, 3), "params.yaml")
    override = "" if named else f" or with -S {meant}=..."  # a section: renamed in its file
    assert str(info.value) == (
        f"params.yaml: {named or key}: no such key (did you mean {meant}?); change it in "
        f"{where}{override}"
    )


def test_an_unknown_key_with_no_near_one_lists_the_valid_keys() -> None:
    with pytest.raises(ParamsError) as info:
        validate(_with_new("search.cifar10.loop.zzz", 3), "params.yaml")
    assert str(info.value) == (
        "params.yaml: search.cifar10.loop.zzz: no such key; search.cifar10.loop has epochs, "
        "warmup_epochs, lr, lr_min, lr_schedule, lr_warmup_epochs, momentum, weight_decay, "
        "grad_clip, architect, eval_every, sync_bn, bf16, channels_last, diagnostics, stopping"
    )


def test_an_unknown_key_written_in_conf_is_named_in_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf/profile").mkdir(parents=True)
    (tmp_path / "conf/config.yaml").write_text("search:\n  cifar10:\n    loop:\n      epoch: 3\n")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(config, "CONF_DIR", tmp_path / "conf")
    with pytest.raises(ParamsError) as info:
        validate(_with_new("search.cifar10.loop.epoch", 3), "params.yaml")
    assert "(did you mean search.cifar10.loop.epochs?); change it in conf/config.yaml " in str(
        info.value
    )


WRONG_TYPE = [  # (key, value, shown, expected)
    ("search.cifar10.loop.epochs", "three", "'three'", "an integer"),
    ("train_cifar10.loop.epochs", 1.5, "1.5", "an integer"),
    ("search.cifar10.loop.epochs", None, "null", "an integer"),
    ("search.cifar10.loop.architect.lr", "x", "'x'", "a number"),
    ("search.imagenet.loop.architect.grad_clip", "x", "'x'", "a number or null"),
    ("data.augment.hflip", "maybe", "'maybe'", "true or false"),
    ("seeds", ["a"], "['a']", "a list of integers"),
    ("seeds", 3, "3", "a list of integers"),
    ("search.cifar10.loop", 3, "3", "a SearchConfig section"),
]


@pytest.mark.parametrize(("key", "value", "shown", "expected"), WRONG_TYPE)
def test_a_wrong_type_names_key_value_and_the_type_expected(
    key: str, value: Any, shown: str, expected: str
) -> None:
    with pytest.raises(ParamsError) as info:
        validate(_with(key, value), "params.yaml")
    message = str(info.value)
    assert message.startswith(f"params.yaml: {key} = {shown}: expected {expected}; "), message
    assert message.endswith(f" or with -S {key}=...") and "\n" not in message


COMPOSE_REFUSED = [  # (override, what the one line says)
    ("+search.cifar10.loop.epoch=3", "search.cifar10.loop.epoch: no such key (did you mean "),
    ("search.cifar10.loop.epoch=3", "search.cifar10.loop.epoch: no such key (did you mean "),
    ("search.cifar10.loop.epochs=three", "search.cifar10.loop.epochs = 'three': expected an int"),
    ("seeds=[a]", "seeds = ['a']: expected a list of integers; change it in conf/profile/tiny"),
    ("profile=tinyy", "In 'config': Could not find 'profile/tinyy' Available options in 'profile'"),
    ("search.cifar10.loop.epochs", "Error parsing override 'search.cifar10.loop.epochs'"),
]


@pytest.mark.parametrize(("override", "says"), COMPOSE_REFUSED)
def test_compose_refuses_a_bad_override_in_one_line_naming_it(override: str, says: str) -> None:
    with pytest.raises(ParamsError) as info:
        compose_params([override])
    message = str(info.value)
    assert message.startswith(f"conf/ with overrides [{override!r}]: {says}"), message
    assert "\n" not in message


def _with_new(key: str, value: Any) -> dict[str, Any]:
    """params.yaml with ``key`` added (the sections on its way too)."""
    raw = copy.deepcopy(RAW)
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw
