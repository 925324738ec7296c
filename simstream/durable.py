"""Durable files on a local disk: fsync, atomic replacement, and SHA-256 digests.

A write is only durable once its data *and* the directory entry naming it are
on disk, so every helper here fsyncs both. A crash at any point leaves either
the old state or the complete new one, never a torn file under the final name.
Used by the model registry, index snapshots and the index node's alias.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

_CHUNK = 1 << 20


def fsync_path(path: Path | str) -> None:
    """fsync a file, or a directory (its entries: new files and renames)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic: for files in a temporary directory)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file beside it, fsync, rename, fsync dir.

    Readers see the old content or the new one, never a mix; if the write fails,
    the old file is left as it was and the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def publish_dir(tmp: Path | str, final: Path | str) -> None:
    """Give a fully written directory its final name durably: fsync it, rename, fsync the parent.

    ``final`` must not exist; its parent is the parent of ``tmp``.
    """
    fsync_path(tmp)
    os.rename(tmp, final)
    fsync_path(Path(final).parent)


def sha256_file(path: Path | str) -> str:
    """The hex SHA-256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
