"""Embeddings records: round trips, range markers, one test per decode failure."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simstream.errors import DecodeError
from simstream.wire import EmbeddingRecord, Op, Reason, WireLimits


def _record(body: bytes = b"", **fields: Any) -> bytes:
    """A delete record built by hand with header fields replaced."""
    header = {"op": "delete", "id": "a", "so": 1, "mv": "v1", "t": 0, **fields}
    encoded = json.dumps(header).encode()
    return b"SSR\x01" + struct.pack(">I", len(encoded)) + encoded + body


@given(
    item_id=st.text(min_size=1, max_size=40),
    offset=st.integers(0, 2**62),
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=64),
    label=st.none() | st.text(max_size=10),
    metadata=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
def test_an_upsert_survives_the_round_trip_bit_for_bit(
    item_id: str, offset: int, values: list[float], label: str | None, metadata: dict
) -> None:
    record = EmbeddingRecord(
        op=Op.UPSERT,
        item_id=item_id,
        source_offset=offset,
        model_version="v3",
        vector=np.array(values, dtype=np.float32),
        label=label,
        metadata=metadata,
        event_time_ms=123,
    )
    decoded = EmbeddingRecord.decode(record.encode())
    assert decoded.item_id == item_id and decoded.source_offset == offset
    assert decoded.label == label and decoded.metadata == metadata
    assert decoded.vector is not None and record.vector is not None
    assert decoded.vector.tobytes() == record.vector.tobytes()


def test_a_range_marker_carries_its_half_open_range() -> None:
    marker = EmbeddingRecord.decode(EmbeddingRecord.range_marker(10, 20, "v1").encode())
    assert marker.op is Op.RANGE
    assert (marker.range_start, marker.range_end, marker.source_offset) == (10, 20, 19)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.TRUNCATED),
        (b"XXX\x01\x00\x00\x00\x02{}", Reason.BAD_MAGIC),
        (b"SSR\x09\x00\x00\x00\x02{}", Reason.UNKNOWN_VERSION),
        (b"SSR\x01\x00\x00\x00\x02{}", Reason.UNKNOWN_OP),
        (b"SSR\x01\x00\x00\x00\x05notjs", Reason.BAD_HEADER),
        (b"SSR\x01\x00\x00\x00\x7f{}", Reason.TRUNCATED),
        (b"SSR\x01\x7f\x00\x00\x00{}", Reason.HEADER_TOO_LARGE),
        (b'SSR\x01\x00\x00\x00\x0e{"op":"merge"}', Reason.UNKNOWN_OP),
        (_record(id=5), Reason.BAD_ID),
        (_record(so="1"), Reason.BAD_HEADER),
        (_record(l=7), Reason.BAD_LABEL),
        (_record(m=[1]), Reason.BAD_METADATA),
        (_record(t="now"), Reason.BAD_TIME),
        (_record(d=2, body=bytes(4)), Reason.SIZE_MISMATCH),
        (_record(body=bytes(4)), Reason.TRAILING_BYTES),
    ],
    ids=[
        "no bytes",
        "a wrong magic",
        "an unknown version",
        "a header without fields",
        "a header that is not JSON",
        "a cut header",
        "a huge header length",
        "an unknown op",
        "a numeric id",
        "a text source offset",
        "a numeric label",
        "metadata that is a list",
        "a text time",
        "a vector shorter than its length",
        "a body without a vector length",
    ],
)
def test_bad_bytes_raise_a_decode_error_with_reason_and_raw_bytes(
    data: bytes, reason: Reason
) -> None:
    with pytest.raises(DecodeError) as info:
        EmbeddingRecord.decode(data)
    assert info.value.reason == reason, info.value
    assert info.value.raw == data
    assert info.value.detail and "Expected" in info.value.detail


def test_a_record_header_is_checked_against_the_limits_passed_in() -> None:
    record = EmbeddingRecord(Op.DELETE, "x" * 5000, 1, "v1")
    limits = WireLimits(max_id_chars=4, max_metadata_bytes=64)
    with pytest.raises(DecodeError) as info:
        EmbeddingRecord.decode(record.encode(), limits)
    assert info.value.reason == Reason.HEADER_TOO_LARGE
    assert EmbeddingRecord.decode(record.encode()).item_id == "x" * 5000


def test_a_dead_lettered_range_marker_keeps_its_flag_and_a_plain_one_has_none() -> None:
    flagged = EmbeddingRecord.range_marker(40, 43, "v3", dead_lettered=True)
    plain = EmbeddingRecord.range_marker(40, 43, "v3")
    assert EmbeddingRecord.decode(flagged.encode()).dead_lettered
    assert not EmbeddingRecord.decode(plain.encode()).dead_lettered
    assert b'"dl"' not in plain.encode()
