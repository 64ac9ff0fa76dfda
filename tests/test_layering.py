"""Imports go one way: stages/ -> reporting/ -> pipeline/ -> detection/ -> pcdarts/ (STYLE
principle 1).

``pcdarts`` imports torch, torchvision, numpy, PIL, tqdm and the standard library only;
no tracking or pipeline SDK (hydra, mlflow, dvc) and no OpenMMLab package, not even
lazily inside a function. Only ``detection/`` may import OpenMMLab (``mm*``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "pcdarts"
ALLOWED_IN_LIBRARY = {"torch", "torchvision", "numpy", "PIL", "tqdm", "pcdarts"}
FORBIDDEN_SDKS = {"hydra", "mlflow", "dvc"}


def is_openmmlab(top: str) -> bool:
    """mmdet, mmcv, mmengine, ...; the standard library's ``mmap`` is not one."""
    return top.startswith("mm") and top not in sys.stdlib_module_names


def is_forbidden_in_library(top: str) -> bool:
    return top in FORBIDDEN_SDKS or is_openmmlab(top)


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import anywhere in ``source``.

    Relative imports stay inside their package and are skipped.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py")) if folder.is_dir() else []


def violations(folder: Path, bad: Callable[[str], bool]) -> list[str]:
    out = []
    for path in python_files(folder):
        for line, module in imported_modules(path.read_text()):
            if bad(module.split(".")[0]):
                out.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return out


def test_scanner_sees_every_kind_of_import() -> None:
    source = (
        "import os, mlflow.tracking\n"
        "from hydra import compose\n"
        "from . import sibling\n"
        "def f():\n"
        "    import mmdet.models\n"
        "    from dvc.api import open\n"
    )
    tops = [module.split(".")[0] for _, module in imported_modules(source)]
    assert tops == ["os", "mlflow", "hydra", "mmdet", "dvc"]
    assert [t for t in tops if is_forbidden_in_library(t)] == ["mlflow", "hydra", "mmdet", "dvc"]
    assert not is_openmmlab("mmap")


def test_library_has_python_files() -> None:
    assert (LIBRARY / "__init__.py").exists()
    assert len(python_files(LIBRARY)) >= 8


def test_library_imports_no_sdk_and_no_openmmlab() -> None:
    assert violations(LIBRARY, is_forbidden_in_library) == []


def test_library_imports_only_allowed_packages() -> None:
    def not_allowed(top: str) -> bool:
        return top not in ALLOWED_IN_LIBRARY and top not in sys.stdlib_module_names

    assert violations(LIBRARY, not_allowed) == []


def test_importing_library_loads_no_sdk() -> None:
    code = "import json, sys, pcdarts; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "pcdarts" in loaded
    bad = sorted({m for m in loaded if is_forbidden_in_library(m.split(".")[0])})
    assert bad == []


@pytest.mark.parametrize("folder", ["pcdarts", "stages", "pipeline", "reporting"])
def test_only_detection_imports_openmmlab(folder: str) -> None:
    assert violations(ROOT / folder, is_openmmlab) == []


def test_imports_point_one_way() -> None:
    """Each layer imports only the layers below it: stages/ -> reporting/ -> pipeline/ ->
    detection/ -> pcdarts/ (reporting/ writes through pipeline/'s one atomic writer)."""
    above = {
        "pcdarts": {"detection", "pipeline", "reporting", "stages"},
        "detection": {"pipeline", "reporting", "stages"},
        "pipeline": {"reporting", "stages"},
        "reporting": {"stages"},
    }
    for folder, forbidden in above.items():
        assert violations(ROOT / folder, lambda top, f=forbidden: top in f) == [], folder


def test_stages_holds_only_entry_points() -> None:
    """stages/ is the DVC entry points (and compose, what `make params` runs): no support code."""
    names = {p.stem for p in python_files(ROOT / "stages")} - {"__init__"}
    for name in names:
        source = (ROOT / "stages" / f"{name}.py").read_text()
        assert 'if __name__ == "__main__":' in source, f"stages/{name}.py is not an entry point"
