"""The embeddings log's wire format."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simstream.errors import DecodeError
from workers.ingest.record import EmbeddingRecord, RecordOp


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
        op=RecordOp.UPSERT,
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
    assert marker.op is RecordOp.RANGE
    assert (marker.range_start, marker.range_end, marker.source_offset) == (10, 20, 19)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"XXX\x01\x00\x00\x00\x02{}", "bad magic"),
        (b"SSR\x09\x00\x00\x00\x02{}", "unknown record version"),
        (b"SSR\x01\x00\x00\x00\x02{}", "invalid record header"),
        (b"SSR\x01\x00\x00\x00\x05notjs", "invalid record header"),
    ],
)
def test_bad_bytes_raise_a_decode_error_that_keeps_them(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        EmbeddingRecord.decode(data)
    assert info.value.raw == data
