"""Shared strategies and hand-built envelopes for the wire tests."""

from __future__ import annotations

import json
import struct
from io import BytesIO
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from simstream.wire import (
    DTYPES,
    EVENT_MAGIC,
    ArrayPayload,
    ImagePayload,
    ItemEvent,
    Payload,
    VectorPayload,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
metadata_values = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
metadata = st.dictionaries(
    st.text(st.characters(codec="utf-8"), max_size=10), metadata_values, max_size=5
)
arrays = hnp.arrays(
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6),
)
array_payloads = arrays.map(ArrayPayload.from_array)
vector_payloads = st.lists(
    st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=64
).map(VectorPayload.from_values)
pixels = st.sampled_from([(), (3,), (4,)]).flatmap(
    lambda channels: hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8).map(
            lambda hw: (*hw, *channels)
        ),
    )
)
png_payloads = pixels.map(ImagePayload.from_array)
payloads: st.SearchStrategy[Payload] = st.one_of(array_payloads, vector_payloads, png_payloads)


@st.composite
def events(draw: st.DrawFn, payload: st.SearchStrategy[Payload] = payloads) -> ItemEvent:
    time = draw(st.integers(0, 2**63 - 1))
    if draw(st.booleans()):
        return ItemEvent.delete(draw(texts), event_time_ms=time)
    return ItemEvent.upsert(
        draw(texts), draw(payload), draw(st.none() | texts), draw(metadata), time
    )


def png(width: int = 4, height: int = 3, mode: str = "L") -> bytes:
    buffer = BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def envelope(
    header: dict[str, Any],
    body: bytes = b"",
    magic: bytes = EVENT_MAGIC,
    version: int = 1,
    raw_header: bytes | None = None,
) -> bytes:
    """An envelope built by hand, so each field can be broken on purpose."""
    encoded = raw_header if raw_header is not None else json.dumps({**header}).encode()
    return struct.pack(">4sBI", magic, version, len(encoded)) + encoded + body


def upsert_header(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "op": "upsert", "ts": 1, "kind": "vector", "size": 4, **fields}


VECTOR_BODY = np.float32(1.0).tobytes()
VALID = envelope(upsert_header(), VECTOR_BODY)
