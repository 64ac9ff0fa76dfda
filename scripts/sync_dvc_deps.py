"""Rewrite the Python deps of every stage in dvc.yaml from the code's imports.

    python scripts/sync_dvc_deps.py     # then review `git diff dvc.yaml`

The rule is pipeline/dvc_deps.py's, the one tests/test_dvc_declarations.py checks: a stage
depends on the repository modules its entry point imports, transitively (tracking and
package __init__ aside).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from pipeline.dvc_deps import code_closure  # noqa: E402


def main() -> None:
    lines = (ROOT / "dvc.yaml").read_text().splitlines(keepends=True)
    out: list[str] = []
    module = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"\s+cmd: (.*)", line):
            module = shlex.split(m.group(1))[2]
        out.append(line)
        if re.match(r"\s+deps:\s*$", line) and module is not None:
            j = i + 1
            indent = re.match(r"(\s*)- ", lines[j]).group(1)  # type: ignore[union-attr]
            items = []
            while j < len(lines) and lines[j].startswith(f"{indent}- "):
                items.append(lines[j][len(indent) + 2 :].strip())
                j += 1
            data = [d for d in items if not d.endswith(".py")]
            code = sorted(code_closure(module))
            out += [f"{indent}- {d}\n" for d in code + data]
            i = j
            continue
        i += 1
    (ROOT / "dvc.yaml").write_text("".join(out))


if __name__ == "__main__":
    main()
