"""Atomic file writes: a killed job never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The rename is atomic on POSIX file systems, so readers (and Snakemake) see
    either the old file, no file, or the complete new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_orphan_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete what :func:`atomic_path` left beside ``path`` when its process was killed (SIGKILL skips the
    cleanup); returns the files removed. Call it only for outputs no other live process is writing."""
    path = Path(path)
    orphans = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.part"))
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(path, text.encode())


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def path_inside(root: str | os.PathLike, relative: str) -> Path:
    """``root / relative``, refused (ValueError) when it resolves outside ``root`` (``..``, absolute, links)."""
    root = Path(root)
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path}: leads outside {root}")
    return path
