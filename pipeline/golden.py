"""The golden result: the tiny run's headline numbers, committed with their tolerances, and
the check that a workspace reproduces them.

    python -m pipeline.golden check     # `make check-repro`: compare outputs/ with the file
    python -m pipeline.golden update --machine "..." --seconds 812   # after a reference run
    python -m pipeline.golden readme    # rewrite the README's block from the file

``expected/tiny.json`` is one reference run: ``values`` (every test error, AP, searched
genotype and search decision of the tiny study, read from the stages' declared outputs),
``tolerances`` (how far a run may land from each kind of value; genotypes must be equal)
and ``measured_on`` (machine, CPU kernels, commit, date, wall time). The search is chaotic:
other CPU kernels round differently and derive other cells (docs/reproducibility.md), so
the stages pin PyTorch's CPU kernels to AVX2 (pipeline/kernels.py) and one reference run
holds on every x86-64 machine with AVX2. A run on other kernels is not compared: the check
says so in one line. The README's tiny numbers are rendered from the file, never typed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pcdarts.errors import UserError
from pipeline.config import REPO_ROOT, Params, load_params
from pipeline.io import read_json, write_json, write_text
from pipeline.kernels import AVX2, X86_64
from pipeline.paths import search_outs, train_outs, transfer_outs

EXPECTED = REPO_ROOT / "expected" / "tiny.json"
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- golden:begin -->", "<!-- golden:end -->"
DATASETS = ("cifar10", "imagenet")
# Value key suffix -> tolerance kind (the file states each kind's absolute tolerance).
KINDS = {
    "top1_err": "error_points",
    "top5_err": "error_points",
    "bbox_mAP": "ap",
    "bbox_mAP_50": "ap",
    "derivation_margin": "margin",
    "alpha_entropy_normalised": "entropy",
    "stable_since_epoch": "epochs",
    "genotype": "exact",
}
DEFAULT_TOLERANCES = {
    "error_points": 1.0,  # test error, percentage points: 3 of the 299 held-out digits
    "ap": 0.05,  # COCO AP / AP50 (0-1) on the 100 validation canvases
    "margin": 0.01,  # smallest derivation margin (softmax(alpha) x edge weight)
    "entropy": 0.02,  # normalised alpha entropy (1 = uniform)
    "epochs": 0,  # the epoch since which the genotype is unchanged
    "exact": 0,  # genotypes: equal, op for op
}


class GoldenError(UserError):
    """The expected file or a result it names is missing or malformed."""


def stage_metrics(p: Params) -> dict[str, dict[str, Any]]:
    """The metrics file of every stage the reference run holds values of, by DVC stage."""
    metrics: dict[str, dict[str, Any]] = {}
    for dataset in DATASETS:
        for seed in p.seeds:
            stage = f"search@{dataset}-{seed}"
            metrics[stage] = _read(search_outs(dataset, seed)["metrics"], stage)
        for cell in getattr(p, f"train_{dataset}").cells:
            stage = f"train_{dataset}@{cell}"
            metrics[stage] = _read(train_outs(dataset, cell)["metrics"], stage)
    metrics["transfer_ssd"] = _read(transfer_outs()["metrics"], "transfer_ssd")
    return metrics


def collect(p: Params) -> dict[str, Any]:
    """The headline values of the workspace's outputs, keyed ``<stage>/<metric>``."""
    values: dict[str, Any] = {}
    metrics = stage_metrics(p)
    for dataset in DATASETS:
        for seed in p.seeds:
            stage = f"search@{dataset}-{seed}"
            values[f"{stage}/genotype"] = _read(search_outs(dataset, seed)["genotype"], stage)
            for key in ("derivation_margin", "stable_since_epoch", "alpha_entropy_normalised"):
                values[f"{stage}/{key}"] = metrics[stage][f"search/{key}"]
        for cell in getattr(p, f"train_{dataset}").cells:
            stage = f"train_{dataset}@{cell}"
            # top-1 only: with 10 digit classes top-5 error is 0 by construction
            values[f"{stage}/test/top1_err"] = metrics[stage]["test/top1_err"]
    for key in ("coco/bbox_mAP", "coco/bbox_mAP_50"):
        values[f"transfer_ssd/{key}"] = metrics["transfer_ssd"][key]
    return values


def kernels_mismatch(runtimes: dict[str, Any], reference: dict[str, Any]) -> str | None:
    """Why a run's stages (their metrics' ``runtime`` records, by stage) cannot be compared
    with the reference run, in one line; None when every stage ran the reference's kernels."""
    want = reference["measured_on"].get("cpu_capability", "AVX2")

    def stages(pred: Any) -> str:
        bad = [stage for stage, r in runtimes.items() if pred(r)]
        return bad[0] + (f" and {len(bad) - 1} other stages" if len(bad) > 1 else "")

    if any(r is None for r in runtimes.values()):
        return (
            f"{stages(lambda r: r is None)} recorded no CPU kernels (outputs from before they "
            "were recorded): rerun `dvc repro --force` to compare with " + _name()
        )
    if any(r["machine"] not in X86_64 for r in runtimes.values()):
        machine = next(r["machine"] for r in runtimes.values() if r["machine"] not in X86_64)
        return (
            f"{stages(lambda r: r['machine'] not in X86_64)} ran on a {machine} CPU, not "
            f"x86-64: there are no AVX2 kernels to pin, so the chaotic tiny search derives other "
            f"cells than {_name()} by design (docs/reproducibility.md); nothing to compare"
        )
    if any(not r["cpu_has_avx2"] for r in runtimes.values()):
        return (
            f"{stages(lambda r: not r['cpu_has_avx2'])} ran on an x86-64 CPU without AVX2: its "
            f"kernels cannot be pinned to {_name()}'s AVX2 ones, so its results differ by design "
            "(docs/reproducibility.md); nothing to compare"
        )
    if any(r["cpu_kernels"] != AVX2 for r in runtimes.values()):
        native = next(r for r in runtimes.values() if r["cpu_kernels"] != AVX2)
        return (
            f"{stages(lambda r: r['cpu_kernels'] != AVX2)} ran on the CPU's native "
            f"{native['cpu_capability']} kernels (runtime.cpu_kernels: {native['configured']}), "
            f"{_name()} on pinned AVX2 ones: set runtime.cpu_kernels: avx2 (the default) and "
            "rerun `dvc repro` to compare"
        )
    if any(r["cpu_capability"] != want for r in runtimes.values()):
        got = next(r["cpu_capability"] for r in runtimes.values() if r["cpu_capability"] != want)
        return (
            f"{stages(lambda r: r['cpu_capability'] != want)} ran PyTorch's {got} kernels, "
            f"{_name()} its {want} ones: nothing to compare"
        )
    return None


@dataclass(frozen=True)
class Check:
    key: str
    expected: Any
    actual: Any
    tolerance: float
    ok: bool

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        if isinstance(self.expected, dict) or isinstance(self.actual, dict):
            what = "equal" if self.ok else _genotype_diff(self.expected, self.actual)
            return f"{mark} {self.key}: {what}"
        within = f"{_fmt(self.expected)} +- {self.tolerance:g}"
        return f"{mark} {self.key}: expected {within}, got {_fmt(self.actual)}"


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> list[Check]:
    """Every expected value against the workspace's, within its kind's tolerance."""
    tolerances = {**DEFAULT_TOLERANCES, **expected.get("tolerances", {})}
    checks = []
    for key, want in expected["values"].items():
        tol = float(tolerances[kind_of(key)])
        got = actual.get(key)
        if got is None:
            ok = False
        elif isinstance(want, dict):
            ok = got == want
        else:
            ok = abs(float(got) - float(want)) <= tol + 1e-12
        checks.append(Check(key, want, got, tol, ok))
    return checks


def kind_of(key: str) -> str:
    suffix = key.rsplit("/", 1)[-1]
    if suffix not in KINDS:
        raise GoldenError(f"{_name()}: no tolerance kind for {key!r}")
    return KINDS[suffix]


def render_readme_block(reference: dict[str, Any]) -> str:
    """The README's tiny-run table, from the expected file only."""
    m = reference["measured_on"]
    lines = [
        BEGIN,
        f"Measured {m['date']} at commit {m['commit']} on {m['machine']}, PyTorch's CPU "
        f"kernels pinned to {m['cpu_capability']}; the whole tiny `dvc repro` took "
        f"{_minutes(m['dvc_repro_seconds'])}. `make check-repro` compares a run with it "
        f"(`{_name()}`; this block is rendered from it by `python -m pipeline.golden readme`).",
        "",
        "| result | value | tolerance |",
        "|---|---|---|",
    ]
    tolerances = {**DEFAULT_TOLERANCES, **reference.get("tolerances", {})}
    for key, value in reference["values"].items():
        if isinstance(value, dict):
            text, tol = _genotype_text(value), "equal"
        else:
            text, tol = _fmt(value), f"+- {tolerances[kind_of(key)]:g}"
        lines.append(f"| {key} | {text} | {tol} |")
    lines.append(END)
    return "\n".join(lines)


def _read(path: Path, stage: str) -> Any:
    return read_json(REPO_ROOT / path, stage)  # MissingInputError names the stage to run


def _genotype_diff(want: Any, got: Any) -> str:
    if not isinstance(got, dict):
        return "missing"
    diffs = []
    for cell in ("normal", "reduce"):
        for i, (a, b) in enumerate(zip(want[cell], got[cell], strict=False)):
            if list(a) != list(b):
                diffs.append(f"{cell}[{i}] {a[0]}<-{a[1]} became {b[0]}<-{b[1]}")
    return "differs: " + "; ".join(diffs) if diffs else "differs in concat"


def _fmt(x: Any) -> str:
    return "missing" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _genotype_text(genotype: Any) -> str:
    if not isinstance(genotype, dict):
        return "missing"
    return "; ".join(
        f"{cell}: " + " ".join(f"{op}<-{i}" for op, i in genotype[cell])
        for cell in ("normal", "reduce")
    )


def _name() -> str:
    return str(EXPECTED.relative_to(REPO_ROOT))


def load_reference() -> dict[str, Any]:
    if not EXPECTED.is_file():
        raise GoldenError(f"no {_name()}: run a reference `make repro`, then `golden update`")
    reference: dict[str, Any] = read_json(EXPECTED, "golden")
    return reference


def check() -> int:
    """Compare the workspace with the reference run: 0 when every value is within tolerance.
    A run on other CPU kernels is refused in one line (:func:`kernels_mismatch`)."""
    p = load_params()
    reference = load_reference()
    runtimes = {stage: m.get("runtime") for stage, m in stage_metrics(p).items()}
    if (why := kernels_mismatch(runtimes, reference)) is not None:
        print(f"check-repro: {why}")
        return 1
    checks = compare(reference, collect(p))
    failed = [c for c in checks if not c.ok]
    within = len(checks) - len(failed)
    print(f"check-repro: {within} of {len(checks)} within tolerance of {_name()}")
    if not failed:
        print(f"check-repro: this run reproduces {_name()}")
        return 0
    for c in failed:
        print(c.line())
    return 1


def update(machine: str, seconds: float) -> None:
    """Write the reference file from this workspace's outputs; they must all have run on
    pinned AVX2 kernels (the reference every x86-64 machine can reproduce)."""
    p = load_params()
    runtimes = {stage: m.get("runtime") for stage, m in stage_metrics(p).items()}
    pinned = {"measured_on": {"cpu_capability": "AVX2"}}
    if (why := kernels_mismatch(runtimes, pinned)) is not None:
        raise GoldenError(f"not a reference run: {why}")
    old: dict[str, Any] = read_json(EXPECTED, "golden") if EXPECTED.is_file() else {}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    measured = {
        "machine": machine,
        "cpu_kernels": AVX2,
        "cpu_capability": "AVX2",
        "commit": commit,
        "date": date.today().isoformat(),
        "dvc_repro_seconds": seconds,
    }
    tolerances = {**DEFAULT_TOLERANCES, **old.get("tolerances", {})}
    new = {"measured_on": measured, "tolerances": tolerances, "values": collect(p)}
    write_json(EXPECTED, new)
    print(f"wrote {_name()}")


def readme() -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise GoldenError(f"{README} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text(README, head + render_readme_block(load_reference()) + tail)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.golden", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="compare the workspace's results with expected/tiny.json")
    up = sub.add_parser("update", help="write expected/tiny.json from outputs/")
    up.add_argument("--machine", required=True, help="where the reference run ran")
    up.add_argument("--seconds", type=float, required=True, help="its `dvc repro` wall time")
    sub.add_parser("readme", help="rewrite the README's block from expected/tiny.json")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check()
    if args.command == "update":
        update(args.machine, args.seconds)
    else:
        readme()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as error:
        print(f"check-repro: {error}", file=sys.stderr)
        sys.exit(1)
