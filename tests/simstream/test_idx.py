"""The IDX reader shared by the model's datasets and the producers' sources."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from simstream.errors import DatasetError
from simstream.idx import find_idx, read_idx


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` as an IDX file of unsigned bytes (gzipped if ``compress``)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_an_idx_file_reads_plain_or_gzipped(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    write_idx(tmp_path / "b.gz", array, compress=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), array)


def test_other_idx_types_are_read_big_endian(tmp_path: Path) -> None:
    path = tmp_path / "floats"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I2f", 2, 0.5, -1.0))
    np.testing.assert_array_equal(read_idx(path), np.array([0.5, -1.0], np.float32))


def test_the_plain_file_is_found_before_the_gzipped_one(tmp_path: Path) -> None:
    assert find_idx(tmp_path, "x-idx1-ubyte") is None
    (tmp_path / "x-idx1-ubyte.gz").write_bytes(b"")
    assert find_idx(tmp_path, "x-idx1-ubyte") == tmp_path / "x-idx1-ubyte.gz"
    (tmp_path / "x-idx1-ubyte").write_bytes(b"")
    assert find_idx(tmp_path, "x-idx1-ubyte") == tmp_path / "x-idx1-ubyte"


def test_a_file_that_is_not_idx_or_is_truncated_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x89PNG....")
    with pytest.raises(DatasetError, match="Expected an IDX file"):
        read_idx(tmp_path / "bad")
    array = np.zeros((2, 2), np.uint8)
    write_idx(tmp_path / "short", array)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(DatasetError, match="Expected 4 data bytes"):
        read_idx(tmp_path / "short")
    with pytest.raises(DatasetError, match="Cannot read IDX file"):
        read_idx(tmp_path / "missing")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00\x08", "Expected an IDX file"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "Expected an IDX file"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "Truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01", "Expected 3 data bytes"),
    ],
    ids=["a short file", "a wrong magic", "a cut header", "missing data"],
)
def test_a_broken_idx_file_is_a_dataset_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_idx(path)
