"""The IDX file format (MNIST's): `read_idx` and `find_idx`.

Shared by the datasets of `model` and the sources of `producers`, which import
nothing of each other.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from simstream.errors import DatasetError

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def find_idx(directory: Path, name: str) -> Path | None:
    """``directory/name``, else ``directory/name.gz``, else ``None``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file, gzipped when its name ends in ``.gz``.

    Raises:
        DatasetError: the file is missing, truncated or not IDX.
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise DatasetError(f"Cannot read IDX file {str(path)!r}: {e}") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _DTYPES:
        raise DatasetError(
            f"Expected an IDX file (magic 00 00 <type> <ndim>) at {str(path)!r}. "
            f"Received: {data[:4].hex(' ')}"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise DatasetError(f"Truncated IDX header in {str(path)!r}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(
            f"Expected {expected} data bytes for shape {shape} in {str(path)!r}. "
            f"Received: {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
