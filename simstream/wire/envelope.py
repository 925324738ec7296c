"""The one envelope codec every message shares. No Kafka here.

Layout (integers big-endian)::

    offset  size  field
    0       M     magic: ASCII, 4 bytes (b"SSIE", b"SSDL") or 3 (b"SSR")
    M       1     version: 1
    M+1     4     H: header length in bytes, unsigned
    M+5     H     header: one compact JSON object, UTF-8
    M+5+H   N     body: raw bytes

A *sized* envelope (item events, dead letters) states N in ``header["size"]``;
an unsized one (embeddings records) has the rest of the bytes as its body.
Readers ignore header keys they do not know; anything an old reader would
misread bumps the version, and an unknown version is an error, never a guess.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from simstream.errors import DecodeError, InvalidEventError
from simstream.wire.fields import header_field, type_name
from simstream.wire.reason import Reason, invalid

VERSION: Final = 1
#: magic of an `ItemEvent`.
EVENT_MAGIC: Final = b"SSIE"
#: magic of a `DeadLetter`.
DEAD_LETTER_MAGIC: Final = b"SSDL"
#: magic of an `EmbeddingRecord`.
EMBEDDING_MAGIC: Final = b"SSR"

_VERSION_AND_LENGTH = struct.Struct(">BI")


def prefix_size(magic: bytes) -> int:
    """Bytes before the header: magic, version and header length."""
    return len(magic) + _VERSION_AND_LENGTH.size


def pack(magic: bytes, header: dict[str, Any], body: bytes, *, sized: bool = True) -> bytes:
    """The envelope of ``header`` and ``body`` (``header["size"]`` added when sized).

    Raises:
        ValueError: the header holds a value JSON cannot carry (NaN, Inf).
    """
    if sized:
        header = {**header, "size": len(body)}
    encoded = compact_json(header)
    return b"".join((magic, _VERSION_AND_LENGTH.pack(VERSION, len(encoded)), encoded, body))


def unpack(
    magic: bytes, data: bytes, max_header: int, *, sized: bool = True
) -> tuple[dict[str, Any], bytes]:
    """The header and body of an envelope.

    Args:
        magic: the magic the message must start with.
        data: the envelope.
        max_header: the largest header length admitted, in bytes.
        sized: whether ``header["size"]`` states the body length.

    Raises:
        InvalidEventError: with a `Reason`; `decoding` turns it into a `DecodeError`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise invalid(Reason.TRUNCATED, f"Expected bytes. Received: {type_name(data)}")
    if not isinstance(data, bytes):
        data = bytes(data)
    found = data[: len(magic)]
    if found != magic:
        if len(found) < len(magic) and magic.startswith(found):
            raise invalid(Reason.TRUNCATED, f"Expected {magic!r}. Received: {found!r}")
        raise invalid(Reason.BAD_MAGIC, f"Expected magic {magic!r}. Received: {found!r}")
    start = prefix_size(magic)
    if len(data) < start:
        raise invalid(
            Reason.TRUNCATED, f"Expected at least {start} bytes. Received: {len(data)} bytes"
        )
    version, header_size = _VERSION_AND_LENGTH.unpack_from(data, len(magic))
    if version != VERSION:
        raise invalid(
            Reason.UNKNOWN_VERSION, f"Expected version {VERSION}. Received: version {version}"
        )
    if header_size > max_header:
        raise invalid(
            Reason.HEADER_TOO_LARGE,
            f"Expected a header of at most {max_header} bytes. Received: {header_size} bytes",
        )
    end = start + header_size
    if len(data) < end:
        raise invalid(
            Reason.TRUNCATED,
            f"Expected a {header_size}-byte header. Received: {len(data) - start} bytes",
        )
    try:
        header = _DECODER.decode(data[start:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise invalid(Reason.BAD_HEADER, f"Expected a UTF-8 JSON object. Received: {e}") from None
    if not isinstance(header, dict):
        raise invalid(
            Reason.BAD_HEADER, f"Expected a JSON object header. Received: {type_name(header)}"
        )
    body = data[end:]
    if sized:
        _check_size(header_field(header, "size", int, Reason.BAD_HEADER), len(body))
    return header, body


@contextmanager
def decoding(data: bytes) -> Iterator[None]:
    """Turn a rule broken while decoding ``data`` into a `DecodeError` that keeps ``data``."""
    try:
        yield
    except InvalidEventError as e:
        raise DecodeError(e.reason, raw=data, detail=str(e)) from None


def compact_json(value: object) -> bytes:
    """``value`` as compact UTF-8 JSON, the form of every header.

    Raises:
        ValueError: ``value`` holds NaN or Inf.
    """
    return _ENCODER.encode(value).encode("utf-8")


def _check_size(size: int, received: int) -> None:
    if size < 0 or received < size:
        raise invalid(Reason.TRUNCATED, f"Expected a {size}-byte body. Received: {received} bytes")
    if received > size:
        raise invalid(
            Reason.TRAILING_BYTES,
            f"Expected a {size}-byte body. Received: {received - size} bytes more",
        )


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Made once: json.dumps/loads with options build a new encoder/decoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
