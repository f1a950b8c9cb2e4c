"""Atomic file writes, run-folder manifests, run-name slugs and version stamps.

This is the one atomic writer of the project (the trainer, compare, sweep and plots all use
it). Files get the permissions ``open()`` would give them under the process umask (``mkstemp``
alone would leave them 0600, unreadable to colleagues on a shared server).

Every output of an experiment is written to a temporary file in the destination folder and
moved into place with :func:`os.replace`, so a reader sees either the old file or the whole new
one, never a half-written file. A run folder holds ``MANIFEST.json`` (written first, listing
the outputs the run will produce) and a ``COMPLETE`` marker (written last, only after every
listed output exists). :func:`check_run_complete` refuses a folder where either is missing, so
an interrupted run is reported instead of silently plotted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

MANIFEST_NAME = "MANIFEST.json"
COMPLETE_NAME = "COMPLETE"


class IncompleteRunError(RuntimeError):
    """A run folder is missing its manifest, its ``COMPLETE`` marker or listed outputs.

    The CLI exits with :attr:`exit_code` 1 on it.

    Attributes:
        run_dir: the folder that was checked.
        missing: relative names of the missing files.
    """

    exit_code = 1

    def __init__(self, run_dir: Path, missing: Sequence[str], reason: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.missing = list(missing)
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"run folder {str(self.run_dir)!r} is incomplete{detail}: missing {self.missing}"
        )


def slug(text: str) -> str:
    """A file-name-safe form of an env id or run name (``mei_envs/Foo-v0`` -> ``mei_envs-Foo-v0``,
    as rl-zoo names its folders): every run of other characters becomes one ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text.replace("/", "-")).strip("-")


def package_versions(modules: Iterable[str] = ()) -> dict[str, str]:
    """Version stamp for a run's config: Python, mei_envs and each named module's version.

    Modules that are not installed are reported as ``"not installed"``.
    """
    import importlib

    out = {"python": sys.version.split()[0]}
    for name in ("mei_envs", *modules):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            out[name] = "not installed"
            continue
        out[name] = str(getattr(mod, "__version__", "unknown"))
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _atomic_handle(path: Path, mode: str, **open_kwargs: Any):
    """Yield a handle on a temp file next to ``path``; move it into place on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave nothing behind: the destination keeps its previous content (or stays absent).
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_with_atomic(path: str | Path, writer: Callable[[IO[str]], None]) -> Path:
    """Call ``writer(handle)`` on a text temp file, then move it to ``path``."""
    with _atomic_handle(Path(path), "w", encoding="utf-8", newline="") as handle:
        writer(handle)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_with_atomic(path, lambda h: h.write(text))


def emit_text(text: str, out: str | Path | None = None) -> str:
    """Print a report's text and, if ``out`` is given, also write it there (atomically, with a
    final newline); returns the text (the experiment scripts' ``main`` return value)."""
    if out:
        write_text_atomic(out, text + "\n")
    print(text)
    return text


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_handle(Path(path), "wb") as handle:
        handle.write(data)
    return Path(path)


def write_csv_atomic(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]],
    fieldnames: Sequence[str] | None = None,
) -> Path:
    """Write dict rows as CSV atomically.

    Args:
        path: destination file.
        rows: one mapping per row.
        fieldnames: column order; default: keys in order of first appearance over all rows.
            Missing values are written as empty cells.
    """
    rows = list(rows)
    if fieldnames is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        fieldnames = list(seen)

    def _write(handle: IO[str]) -> None:
        w = csv.DictWriter(handle, fieldnames=list(fieldnames), restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    return write_with_atomic(path, _write)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv_atomic` as a list of string dicts."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_yaml_atomic(path: str | Path, data: Any) -> Path:
    """Dump ``data`` as block-style YAML (key order kept) atomically."""
    import yaml

    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Dump ``data`` as indented JSON atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_figure_atomic(fig: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format follows the file suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"save_figure_atomic: path={str(path)!r} needs a suffix (.png, .pdf)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, **savefig_kwargs)
    return write_bytes_atomic(path, buffer.getvalue())


# ---- run-folder manifest -----------------------------------------------------------------
def write_manifest(
    run_dir: str | Path, expected: Sequence[str], meta: Mapping[str, Any] | None = None
) -> Path:
    """Start a run folder: record the outputs it will contain (relative paths).

    Any stale ``COMPLETE`` marker is removed first, so the folder reads as incomplete until
    :func:`mark_complete` succeeds.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / COMPLETE_NAME).unlink(missing_ok=True)
    for name in expected:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"write_manifest: expected output {name!r} must be a relative path")
    data = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "expected": list(expected),
        "meta": dict(meta or {}),
    }
    return write_json_atomic(run_dir / MANIFEST_NAME, data)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The parsed ``MANIFEST.json``; :class:`IncompleteRunError` if it is absent or unreadable."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        raise IncompleteRunError(run_dir, [MANIFEST_NAME], "no manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IncompleteRunError(run_dir, [MANIFEST_NAME], f"unreadable manifest: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expected"), list):
        raise IncompleteRunError(run_dir, [MANIFEST_NAME], "manifest has no 'expected' list")
    return data


def missing_outputs(run_dir: str | Path) -> list[str]:
    """Outputs listed in the manifest that do not exist (empty list when all are there)."""
    run_dir = Path(run_dir)
    return [name for name in read_manifest(run_dir)["expected"] if not (run_dir / name).exists()]


def mark_complete(run_dir: str | Path) -> Path:
    """Write the ``COMPLETE`` marker, after checking every manifest output exists.

    Raises:
        IncompleteRunError: naming the outputs that are still missing.
    """
    run_dir = Path(run_dir)
    missing = missing_outputs(run_dir)
    if missing:
        raise IncompleteRunError(run_dir, missing, "cannot mark complete")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return write_text_atomic(run_dir / COMPLETE_NAME, stamp + "\n")


def check_run_complete(run_dir: str | Path) -> Path:
    """Return ``run_dir`` if it is a finished run folder.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
        IncompleteRunError: the manifest, the ``COMPLETE`` marker or a listed output is
            missing; the error's ``missing`` attribute names them.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    missing = missing_outputs(run_dir)
    if not (run_dir / COMPLETE_NAME).is_file():
        missing.append(COMPLETE_NAME)
        raise IncompleteRunError(run_dir, missing, "interrupted or still running")
    if missing:
        raise IncompleteRunError(run_dir, missing, "outputs deleted after completion")
    return run_dir
