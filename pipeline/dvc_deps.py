"""A stage's Python deps in dvc.yaml: the repository modules its entry point imports.

One rule, used by the check (tests/test_dvc_declarations.py) and the rewrite
(scripts/sync_dvc_deps.py): a stage depends on the repository modules its ``python -m``
module imports, transitively; package ``__init__`` files aside (they only re-export), and
the tracking and registry modules aside (they only observe: a change to what is logged must
not rerun GPU-days of search).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_PACKAGES = ("pcdarts", "stages", "detection", "pipeline", "reporting")
OBSERVERS = {  # results never depend on them
    "pcdarts/tracking.py",
    "pipeline/tracking.py",
    "pipeline/registry.py",
}


def module_file(module: str) -> Path | None:
    """The source file of the repository module ``module`` (a package: its __init__)."""
    path = ROOT / Path(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def imports(path: Path) -> set[str]:
    """Repository modules ``path`` imports; ``from pkg import name`` resolved to its source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in LOCAL_PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in LOCAL_PACKAGES:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if module_file(sub) is not None:
                    found.add(sub)
                elif node.module in LOCAL_PACKAGES:  # a name re-exported by __init__
                    found.add(importlib.import_module(node.module).__dict__[alias.name].__module__)
                else:
                    found.add(node.module)
    return found


def code_closure(module: str) -> set[str]:
    """The files (relative to the repository) that ``module`` imports, transitively, itself
    included; package ``__init__`` files and :data:`OBSERVERS` left out."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        path = module_file(current)
        assert path is not None, current
        todo.extend(imports(path))
    files = {module_file(m) for m in seen}
    names = {str(f.relative_to(ROOT)) for f in files if f is not None and f.name != "__init__.py"}
    return names - OBSERVERS
