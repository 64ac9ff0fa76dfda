"""The pipeline's one atomic writer, and reading what an upstream stage wrote.

Every file or folder a stage declares to DVC is written through :func:`atomic_path`: it
is always the old or the new content, never half of it, also when the process is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pcdarts.distributed import is_main
from pcdarts.errors import MissingInputError, UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(path: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (a file, or a folder with ``directory``); it
    replaces ``path`` only if the block succeeds.

    ``path`` is always the old or the new content, never half of it, also when the process
    is killed (SIGKILL, power aside: no fsync). A temporary left by a killed writer of the
    same path is removed here (only one process, rank 0, ever writes a path).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        _remove(stale)
    if directory:
        tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp's 0600 (mkdtemp's 0700) is for the temporary name only
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and path.exists():  # a folder cannot replace a non-empty one: swap
            old = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            _remove(Path(tmp))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    if not is_main():  # under torchrun only rank 0 writes
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-epoch rows for ``dvc plots``: every row has every key, in the order they first
    appear, null where an epoch has no value (an evaluation every few epochs, a search's
    weight-only warm-up). DVC's plots fail on rows that lack a field another row has."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    write_json(path, [{key: row.get(key) for key in keys} for row in rows])


def write_text(path: Path, text: str) -> None:
    if is_main():
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def save_png(fig: Figure, path: Path, dpi: int = 100) -> None:
    """``fig`` as a PNG with no "Software" (matplotlib version) chunk and no timestamp:
    the same figure always gives the same bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - plotting only

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


def copy_file(source: Path, path: Path) -> None:
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def upstream(path: Path, produced_by: str) -> Path:
    """``path``, after checking the upstream stage ``produced_by`` wrote it."""
    if not path.is_file():
        raise MissingInputError(
            f"{path} is missing: it is written by the {produced_by!r} stage "
            f"(dvc repro {produced_by})"
        )
    return path


def read_json(path: Path, produced_by: str, parse: Callable[[str], T] = json.loads) -> T:
    """An upstream stage's JSON output through ``parse``; MissingInputError, or UserError
    naming the file when it is not what ``parse`` expects (damaged, hand-edited)."""
    try:
        return parse(upstream(path, produced_by).read_text())
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:  # JSONDecodeError too
        raise UserError(_damaged(path, produced_by, repr(error))) from None


def read_torch(path: Path, produced_by: str, parse: Callable[[Any], T] = lambda obj: obj) -> T:
    """An upstream stage's ``torch.save`` output (tensors and plain values only) through
    ``parse``; MissingInputError, or UserError naming the file when it cannot be loaded
    (truncated, not a checkpoint) or is not what ``parse`` expects."""
    import torch  # noqa: PLC0415 - only the stages that load tensors pay for it

    upstream(path, produced_by)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged file
        problem = str(error).splitlines()[0].split(". ")[0]  # not its advice on weights_only
        raise UserError(_damaged(path, produced_by, problem)) from None
    try:
        return parse(obj)
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(_damaged(path, produced_by, repr(error))) from None


def _damaged(path: Path, produced_by: str, problem: str) -> str:
    return (
        f"{path} is damaged, not a valid output of {produced_by} ({problem}): rebuild it "
        f"(dvc repro -f {produced_by})"
    )


def save_torch(path: Path, obj: Any) -> None:
    import torch  # noqa: PLC0415 - only the stages that save tensors pay for it

    if not is_main():
        return
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
