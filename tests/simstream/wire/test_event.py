"""Item events: round trips, one test per decode failure, and fuzzing."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simstream.errors import DecodeError, InvalidEventError
from simstream.wire import (
    EVENT_MAGIC,
    ArrayPayload,
    DeadLetter,
    ImagePayload,
    ItemEvent,
    Op,
    Reason,
    VectorPayload,
    WireLimits,
    decode_result,
)
from simstream.wire.reason import EMBEDDING_REASONS
from tests.simstream.wire.helpers import (
    FUZZ,
    VALID,
    VECTOR_BODY,
    array_payloads,
    envelope,
    events,
    pixels,
    png,
    upsert_header,
    vector_payloads,
)

# --- round trips ---------------------------------------------------------------------


@given(events(array_payloads))
def test_events_with_array_payloads_survive_a_round_trip(event: ItemEvent) -> None:
    decoded = ItemEvent.decode(event.encode())
    assert decoded == event
    if decoded.payload is not None:
        assert isinstance(event.payload, ArrayPayload)
        np.testing.assert_array_equal(decoded.payload.to_array(), event.payload.to_array())


@given(events(vector_payloads))
def test_events_with_vector_payloads_survive_a_round_trip(event: ItemEvent) -> None:
    decoded = ItemEvent.decode(event.encode())
    assert decoded == event
    if decoded.payload is not None:
        assert decoded.payload.to_array().dtype == np.float32


@given(pixels)
def test_png_image_payloads_decode_to_the_same_pixels(array: np.ndarray) -> None:
    event = ItemEvent.upsert("img", ImagePayload.from_array(array))
    decoded = ItemEvent.decode(event.encode())
    assert decoded == event
    assert decoded.payload is not None
    np.testing.assert_array_equal(decoded.payload.to_array(), array)


@given(st.sampled_from([(), (3,)]), st.integers(1, 16), st.integers(1, 16))
def test_jpeg_image_payloads_decode_to_the_same_shape(
    channels: tuple[int, ...], height: int, width: int
) -> None:
    array = np.full((height, width, *channels), 128, np.uint8)
    event = ItemEvent.upsert("img", ImagePayload.from_array(array, "JPEG"))
    decoded = ItemEvent.decode(event.encode())
    assert decoded == event
    assert decoded.payload is not None
    assert decoded.payload.to_array().shape == array.shape


def test_the_key_is_the_id_in_utf8() -> None:
    assert ItemEvent.delete("é/1").key == "é/1".encode()


def test_events_get_their_creation_time_in_epoch_ms() -> None:
    event = ItemEvent.delete("a")
    assert 1_600_000_000_000 < event.event_time_ms < 10_000_000_000_000


# --- invalid construction ------------------------------------------------------------

ONE = VectorPayload.from_values([1.0])
#: values of the wrong type, to check that construction refuses them
UNTYPED: dict[str, Any] = {"merge": "merge", "list": [1], "matrix": [[1.0]]}


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: ItemEvent("a", Op.UPSERT), Reason.MISSING_PAYLOAD),
        (
            lambda: ItemEvent("a", Op.DELETE, ONE),
            Reason.UNEXPECTED_PAYLOAD,
        ),
        (lambda: ItemEvent.delete(""), Reason.BAD_ID),
        (lambda: ItemEvent("a", UNTYPED["merge"]), Reason.UNKNOWN_OP),
        (lambda: ItemEvent.delete("a", event_time_ms=-1), Reason.BAD_TIME),
        (
            lambda: ItemEvent.upsert("a", ONE, metadata={"x": UNTYPED["list"]}),
            Reason.BAD_METADATA,
        ),
        (
            lambda: ItemEvent.upsert("a", ONE, metadata={"x": float("nan")}),
            Reason.BAD_METADATA,
        ),
        (lambda: VectorPayload.from_values([1.0, float("inf")]), Reason.NON_FINITE),
        (lambda: VectorPayload.from_values([1e300]), Reason.NON_FINITE),
        (lambda: VectorPayload.from_values(UNTYPED["matrix"]), Reason.BAD_SHAPE),
        (lambda: ArrayPayload.from_array(np.zeros(3, np.int64)), Reason.UNKNOWN_DTYPE),
        (lambda: ArrayPayload.from_array(np.zeros((2, 0), np.uint8)), Reason.BAD_SHAPE),
        (lambda: ImagePayload(b"GIF89a"), Reason.BAD_IMAGE),
    ],
    ids=[
        "an upsert without a payload",
        "a delete with a payload",
        "an empty id",
        "an unknown op",
        "a negative time",
        "nested metadata",
        "NaN metadata",
        "an infinite vector",
        "a vector that overflows float32",
        "a 2-d vector",
        "an int64 array",
        "an empty array",
        "bytes that are no image",
    ],
)
def test_building_an_invalid_event_raises_with_its_reason(
    build: Callable[[], object], reason: Reason
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        build()
    assert caught.value.reason == reason


def test_check_enforces_every_limit() -> None:
    limits = WireLimits(max_id_chars=3, max_payload_bytes=8, max_metadata_bytes=64)
    vector = VectorPayload.from_values([1.0])
    cases = [
        (ItemEvent.delete("abcd"), Reason.BAD_ID),
        (ItemEvent.upsert("a", vector, label="abcd"), Reason.BAD_LABEL),
        (ItemEvent.upsert("a", VectorPayload.from_values([1, 2, 3])), Reason.PAYLOAD_TOO_LARGE),
        (ItemEvent.upsert("a", vector, metadata={"k": "v" * 64}), Reason.METADATA_TOO_LARGE),
    ]
    for event, reason in cases:
        with pytest.raises(InvalidEventError) as caught:
            event.check(limits)
        assert caught.value.reason == reason
    ItemEvent.upsert("abc", vector, label="abc", metadata={"k": 1}).check(limits)


# --- one decode failure per reason ---------------------------------------------------

SMALL = WireLimits(max_id_chars=4, max_payload_bytes=16, max_metadata_bytes=32, max_image_pixels=10)


def vector(body: bytes = VECTOR_BODY, **fields: Any) -> bytes:
    """A vector upsert with header fields replaced."""
    return envelope(upsert_header(size=len(body), **fields), body)


def array(shape: Any, dtype: Any, body: bytes) -> bytes:
    """An array upsert with the given header fields."""
    header = upsert_header(kind="array", shape=shape, dtype=dtype, size=len(body))
    return envelope({k: v for k, v in header.items() if v is not None}, body)


def image(body: bytes) -> bytes:
    """An image upsert."""
    return envelope(upsert_header(kind="image", size=len(body)), body)


GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
INFINITE_META = json.dumps(upsert_header()).encode()[:-1] + b',"meta":{"a":1e999}}'
R = Reason

DECODE_FAILURES: list[tuple[str, bytes, Reason]] = [
    ("a wrong magic", b"NOPE" + VALID[4:], R.BAD_MAGIC),
    ("a dead letter read as an event", DeadLetter("t", 0, 0, "r", b"").encode(), R.BAD_MAGIC),
    ("an unknown version", envelope(upsert_header(), VECTOR_BODY, version=2), R.UNKNOWN_VERSION),
    ("only part of the magic", VALID[:2], R.TRUNCATED),
    ("a cut prefix", VALID[:7], R.TRUNCATED),
    ("a cut header", VALID[:20], R.TRUNCATED),
    ("a cut body", VALID[:-1], R.TRUNCATED),
    ("bytes after the body", VALID + b"\0", R.TRAILING_BYTES),
    ("a huge header length", struct.pack(">4sBI", EVENT_MAGIC, 1, 2**31), R.HEADER_TOO_LARGE),
    ("a header that is not JSON", envelope({}, raw_header=b"{nope"), R.BAD_HEADER),
    ("a header that is not UTF-8", envelope({}, raw_header=b'{"id":"\xff"}'), R.BAD_HEADER),
    ("a header that is a list", envelope({}, raw_header=b"[1]"), R.BAD_HEADER),
    ("a deeply nested header", envelope({}, raw_header=b"[" * 4000), R.BAD_HEADER),
    ("a NaN in the header", envelope({}, raw_header=b'{"size":NaN}'), R.BAD_HEADER),
    ("a missing size", envelope({"id": "a", "op": "delete", "ts": 1}), R.BAD_HEADER),
    ("a body without a kind", vector(kind=None), R.BAD_HEADER),
    ("a missing id", vector(id=None), R.BAD_ID),
    ("an empty id", vector(id=""), R.BAD_ID),
    ("a numeric id", vector(id=5), R.BAD_ID),
    ("an id over the limit", vector(id="abcde"), R.BAD_ID),
    ("a lone surrogate in the id", vector(id="\ud800"), R.BAD_ID),
    ("an unknown op", vector(op="merge"), R.UNKNOWN_OP),
    ("a numeric label", vector(label=7), R.BAD_LABEL),
    ("a label over the limit", vector(label="abcde"), R.BAD_LABEL),
    ("nested metadata", vector(meta={"a": [1]}), R.BAD_METADATA),
    ("infinite metadata", envelope({}, VECTOR_BODY, raw_header=INFINITE_META), R.BAD_METADATA),
    ("metadata that is a list", vector(meta=[1]), R.BAD_METADATA),
    ("metadata over the limit", vector(meta={"k": "v" * 40}), R.METADATA_TOO_LARGE),
    ("a negative time", vector(ts=-1), R.BAD_TIME),
    ("a time past int64", vector(ts=2**63), R.BAD_TIME),
    ("a text time", vector(ts="now"), R.BAD_TIME),
    ("an upsert without payload", vector(b"", kind=None), R.MISSING_PAYLOAD),
    ("a delete with a payload", vector(op="delete"), R.UNEXPECTED_PAYLOAD),
    ("an unknown kind", vector(kind="audio"), R.UNKNOWN_KIND),
    ("a payload over the limit", vector(bytes(20)), R.PAYLOAD_TOO_LARGE),
    ("an unknown dtype", array([1], "int64", bytes(8)), R.UNKNOWN_DTYPE),
    ("a missing dtype", array([1], None, bytes(1)), R.UNKNOWN_DTYPE),
    ("a zero axis", array([0], "uint8", b""), R.BAD_SHAPE),
    ("no axes", array([], "uint8", bytes(1)), R.BAD_SHAPE),
    ("a fractional axis", array([1.5], "uint8", bytes(1)), R.BAD_SHAPE),
    ("a missing shape", array(None, "uint8", bytes(1)), R.BAD_SHAPE),
    ("a shape that needs more bytes", array([2, 2], "int16", bytes(6)), R.SIZE_MISMATCH),
    ("a vector of 5 bytes", vector(bytes(5)), R.SIZE_MISMATCH),
    ("an empty vector", vector(b""), R.SIZE_MISMATCH),
    ("a NaN in a vector", vector(np.float32("nan").tobytes()), R.NON_FINITE),
    ("an Inf in a vector", vector(np.float32("inf").tobytes()), R.NON_FINITE),
    ("bytes that are no image", image(b"notimage"), R.BAD_IMAGE),
    ("a GIF image", image(GIF), R.BAD_IMAGE),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(data, reason) for _, data, reason in DECODE_FAILURES],
    ids=[name for name, _, _ in DECODE_FAILURES],
)
def test_decoding_bad_bytes_raises_a_decode_error_with_reason_and_raw_bytes(
    data: bytes, reason: Reason
) -> None:
    with pytest.raises(DecodeError) as caught:
        ItemEvent.decode(data, SMALL)
    assert caught.value.reason == reason, caught.value
    assert caught.value.raw == data
    assert caught.value.detail and "Expected" in caught.value.detail


def test_decoding_an_image_larger_than_the_pixel_limit_fails() -> None:
    body = png(4, 4)
    data = envelope(upsert_header(kind="image", size=len(body)), body)
    with pytest.raises(DecodeError) as caught:
        ItemEvent.decode(data, WireLimits(max_image_pixels=15))
    assert caught.value.reason == Reason.IMAGE_TOO_LARGE
    assert ItemEvent.decode(data, WireLimits(max_image_pixels=16)).payload == ImagePayload(body)


def test_every_reason_has_a_decode_test() -> None:
    tested = {reason for _, _, reason in DECODE_FAILURES} | {
        Reason.IMAGE_TOO_LARGE,
        Reason.BAD_TOKEN,
    }
    # The embedder's codes are tested in tests/workers/ingest/test_embedder.py.
    assert tested == set(Reason) - EMBEDDING_REASONS


def test_decode_result_returns_bad_input_as_a_value() -> None:
    result = decode_result(b"garbage")
    assert isinstance(result, DecodeError)
    assert result.raw == b"garbage"
    assert decode_result(VALID) == ItemEvent.decode(VALID)


# --- fuzzing -------------------------------------------------------------------------


def _decode_or_decode_error(data: bytes, limits: WireLimits | None = None) -> None:
    try:
        ItemEvent.decode(data, limits)
    except DecodeError as e:
        assert e.raw == data


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_nothing_but_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)
    _decode_or_decode_error(EVENT_MAGIC + data)
    _decode_or_decode_error(EVENT_MAGIC + b"\x01" + data)


@FUZZ
@given(events(), st.data())
def test_corrupted_events_raise_nothing_but_decode_error(
    event: ItemEvent, data: st.DataObject
) -> None:
    encoded = bytearray(event.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            encoded[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del encoded[position:]
            if not encoded:
                break
        else:
            encoded[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    _decode_or_decode_error(bytes(encoded), SMALL)


HEADER_KEYS = ["id", "op", "ts", "label", "meta", "kind", "shape", "dtype", "size"]
header_values = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.text(max_size=5)
    | st.lists(st.integers(-1, 3), max_size=3)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)


@FUZZ
@given(st.dictionaries(st.sampled_from(HEADER_KEYS), header_values), st.binary(max_size=16))
def test_well_formed_envelopes_with_arbitrary_headers_raise_nothing_but_decode_error(
    header: dict[str, Any], body: bytes
) -> None:
    _decode_or_decode_error(envelope(header, body))
