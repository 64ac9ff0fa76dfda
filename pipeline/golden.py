"""The golden result: the tiny run's headline numbers, committed with their tolerances, and
the check that a workspace reproduces them.

    python -m pipeline.golden check     # `make check-repro`: compare outputs/ with the files
    python -m pipeline.golden update --machine "..." --seconds 812   # after a reference run
    python -m pipeline.golden readme    # rewrite the README's block from the files

Each ``expected/tiny-<kernels>.json`` is one reference run: ``values`` (every test error, AP,
searched genotype and search decision of the tiny study, read from the stages' declared
outputs), ``tolerances`` (how far a run may land from each kind of value; genotypes must be
equal) and ``measured_on`` (machine, the CPU kernels PyTorch used, commit, date, wall time).
There is one per kind of CPU kernel measured, because the search is chaotic: the same code
rounds differently on AVX2 and on AVX-512 kernels and derives other cells (README). A run
reproduces the study when it matches one of them. The README's tiny numbers are rendered
from them, never typed.
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
from pipeline.paths import search_outs, train_outs, transfer_outs

EXPECTED_DIR = REPO_ROOT / "expected"
EXPECTED_GLOB = "tiny-*.json"  # one reference run per kind of CPU kernels
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


def collect(p: Params) -> dict[str, Any]:
    """The headline values of the workspace's outputs, keyed ``<stage>/<metric>``."""
    values: dict[str, Any] = {}
    for dataset in DATASETS:
        for seed in p.seeds:
            stage, o = f"search@{dataset}-{seed}", search_outs(dataset, seed)
            values[f"{stage}/genotype"] = _read(o["genotype"], stage)
            metrics = _read(o["metrics"], stage)
            for key in ("derivation_margin", "stable_since_epoch", "alpha_entropy_normalised"):
                values[f"{stage}/{key}"] = metrics[f"search/{key}"]
        for cell in getattr(p, f"train_{dataset}").cells:
            stage = f"train_{dataset}@{cell}"
            metrics = _read(train_outs(dataset, cell)["metrics"], stage)
            # top-1 only: with 10 digit classes top-5 error is 0 by construction
            values[f"{stage}/test/top1_err"] = metrics["test/top1_err"]
    metrics = _read(transfer_outs()["metrics"], "transfer_ssd")
    for key in ("coco/bbox_mAP", "coco/bbox_mAP_50"):
        values[f"transfer_ssd/{key}"] = metrics[key]
    return values


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
        raise GoldenError(f"expected/{EXPECTED_GLOB}: no tolerance kind for {key!r}")
    return KINDS[suffix]


def render_readme_block(references: dict[str, dict[str, Any]]) -> str:
    """The README's tiny-run table, a column per reference run, from the expected files only."""
    names = list(references)
    lines = [BEGIN]
    for name, ref in references.items():
        m = ref["measured_on"]
        lines.append(
            f"- `expected/{name}`: measured {m['date']} at commit {m['commit']} on "
            f"{m['machine']}; the whole tiny `dvc repro` took {_minutes(m['dvc_repro_seconds'])}."
        )
    lines += [
        "",
        "`make check-repro` compares a run with each (tolerances in the files) and passes when "
        "one matches; this block is rendered from them (`python -m pipeline.golden readme`).",
        "",
        "| result | " + " | ".join(f"`{n}`" for n in names) + " | tolerance |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    first = references[names[0]]
    tolerances = {**DEFAULT_TOLERANCES, **first.get("tolerances", {})}
    for key, value in first["values"].items():
        cells = [references[n]["values"].get(key) for n in names]
        if isinstance(value, dict):
            texts = [_genotype_text(c) for c in cells]
            tol = "equal"
        else:
            texts = [_fmt(c) for c in cells]
            tol = f"+- {tolerances[kind_of(key)]:g}"
        lines.append(f"| {key} | " + " | ".join(texts) + f" | {tol} |")
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


def load_references() -> dict[str, dict[str, Any]]:
    """Every reference run, by file name, in the order they were measured."""
    files = sorted(EXPECTED_DIR.glob(EXPECTED_GLOB))
    if not files:
        raise GoldenError(f"no {EXPECTED_DIR / EXPECTED_GLOB}: run a reference `make repro`")
    refs: dict[str, dict[str, Any]] = {f.name: read_json(f, "golden") for f in files}
    return dict(sorted(refs.items(), key=lambda item: str(item[1]["measured_on"]["date"])))


def check() -> int:
    """Compare the workspace with each reference run: 0 when one matches within tolerance."""
    actual = collect(load_params())
    results = {name: compare(ref, actual) for name, ref in load_references().items()}
    for name, checks in results.items():
        failed = sum(not c.ok for c in checks)
        print(f"check-repro: {len(checks) - failed} of {len(checks)} within tolerance of {name}")
    name, checks = min(results.items(), key=lambda item: sum(not c.ok for c in item[1]))
    if all(c.ok for c in checks):
        print(f"check-repro: this run reproduces expected/{name}")
        return 0
    print(f"check-repro: no reference run matches; the closest is expected/{name}:")
    for c in checks:
        if not c.ok:
            print(c.line())
    print(
        f"check-repro: PyTorch's CPU kernels here are {cpu_kernels()}; where no reference run "
        "used the same kernels, the search rounds differently and may derive other cells"
    )
    return 1


def cpu_kernels() -> str:
    """The vector instructions of PyTorch's CPU kernels here (``AVX2``, ``AVX512``, ...)."""
    import torch  # noqa: PLC0415 - only check and update need it

    return str(torch.backends.cpu.get_cpu_capability())


def update(machine: str, seconds: float) -> None:
    kernels = cpu_kernels()
    target = EXPECTED_DIR / f"tiny-{kernels.lower()}.json"
    old: dict[str, Any] = read_json(target, "golden") if target.is_file() else {}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    measured = {
        "machine": machine,
        "cpu_kernels": kernels,
        "commit": commit,
        "date": date.today().isoformat(),
        "dvc_repro_seconds": seconds,
    }
    tolerances = {**DEFAULT_TOLERANCES, **old.get("tolerances", {})}
    new = {"measured_on": measured, "tolerances": tolerances, "values": collect(load_params())}
    write_json(target, new)
    print(f"wrote {target.relative_to(REPO_ROOT)}")


def readme() -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise GoldenError(f"{README} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text(README, head + render_readme_block(load_references()) + tail)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.golden", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="compare the workspace's results with expected/tiny-*.json")
    up = sub.add_parser("update", help="write expected/tiny-<CPU kernels>.json from outputs/")
    up.add_argument("--machine", required=True, help="where the reference run ran")
    up.add_argument("--seconds", type=float, required=True, help="its `dvc repro` wall time")
    sub.add_parser("readme", help="rewrite the README's block from expected/tiny-*.json")
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
