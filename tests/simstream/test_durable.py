from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from simstream import durable


def test_sha256_file_matches_hashlib_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert durable.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_an_empty_file_is_the_empty_digest(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert durable.sha256_file(path) == hashlib.sha256(b"").hexdigest()


def test_write_bytes_writes_the_data(tmp_path: Path) -> None:
    durable.write_bytes(tmp_path / "f", b"abc")
    assert (tmp_path / "f").read_bytes() == b"abc"


def test_atomic_write_bytes_replaces_the_file_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ACTIVE"
    path.write_bytes(b"old")
    durable.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["ACTIVE"]


def test_atomic_write_bytes_creates_a_missing_file(tmp_path: Path) -> None:
    durable.atomic_write_bytes(tmp_path / "alias.json", b"{}")
    assert (tmp_path / "alias.json").read_bytes() == b"{}"


def test_a_write_that_fails_midway_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ACTIVE"
    path.write_bytes(b"old")
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        """Fault injection: the data cannot be made durable."""
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        durable.atomic_write_bytes(path, b"new content that never lands")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ACTIVE"]


def test_publish_dir_renames_a_written_directory_to_its_final_name(tmp_path: Path) -> None:
    tmp = tmp_path / ".tmp-v1"
    tmp.mkdir()
    durable.write_bytes(tmp / "manifest.json", b"{}")
    durable.publish_dir(tmp, tmp_path / "v1")
    assert not tmp.exists()
    assert (tmp_path / "v1" / "manifest.json").read_bytes() == b"{}"


def test_publish_dir_refuses_to_replace_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "kept").write_bytes(b"kept")
    tmp = tmp_path / ".tmp-v1"
    tmp.mkdir()
    (tmp / "other").write_bytes(b"other")
    with pytest.raises(OSError):
        durable.publish_dir(tmp, tmp_path / "v1")
    assert (tmp_path / "v1" / "kept").read_bytes() == b"kept"


def test_fsync_path_accepts_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    durable.fsync_path(tmp_path / "f")
    durable.fsync_path(tmp_path)
