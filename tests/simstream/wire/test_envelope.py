"""The one envelope codec: its layout, unsized bodies, header length limits."""

from __future__ import annotations

import json
import struct

import pytest

from simstream.errors import DecodeError
from simstream.wire import EMBEDDING_MAGIC, ItemEvent, Reason, VectorPayload
from simstream.wire.envelope import decoding, pack, unpack
from tests.simstream.wire.helpers import VECTOR_BODY, envelope, upsert_header


def test_the_envelope_starts_with_magic_version_and_header_length() -> None:
    event = ItemEvent.upsert("a", VectorPayload.from_values([1.0]), event_time_ms=7)
    data = event.encode()
    magic, version, header_size = struct.unpack_from(">4sBI", data)
    header = json.loads(data[9 : 9 + header_size])
    assert (magic, version) == (b"SSIE", 1)
    assert header == {"id": "a", "op": "upsert", "ts": 7, "kind": "vector", "size": 4}
    assert data[9 + header_size :] == VECTOR_BODY


def test_readers_ignore_header_keys_they_do_not_know() -> None:
    data = envelope(upsert_header(future="yes"), VECTOR_BODY)
    assert ItemEvent.decode(data).payload == VectorPayload(VECTOR_BODY)


def test_an_unsized_envelope_with_a_three_byte_magic_has_the_rest_as_its_body() -> None:
    data = pack(EMBEDDING_MAGIC, {"op": "range"}, b"\x01\x02", sized=False)
    assert data == b"SSR\x01\x00\x00\x00\x0e" + b'{"op":"range"}' + b"\x01\x02"
    assert unpack(EMBEDDING_MAGIC, data, max_header=64, sized=False) == (
        {"op": "range"},
        b"\x01\x02",
    )


def test_a_header_longer_than_the_limit_is_refused_before_it_is_read() -> None:
    data = pack(EMBEDDING_MAGIC, {"id": "x" * 100}, b"", sized=False)
    with pytest.raises(DecodeError) as caught, decoding(data):
        unpack(EMBEDDING_MAGIC, data, max_header=64, sized=False)
    assert caught.value.reason == Reason.HEADER_TOO_LARGE
    assert caught.value.raw == data
