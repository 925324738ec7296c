"""Dead letters: round trips, reasons kept, bad bytes refused."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simstream.errors import DecodeError
from simstream.wire import DEAD_LETTER_MAGIC, DeadLetter, decode_result
from simstream.wire.deadletter import MAX_DETAIL_CHARS, MAX_RAW_BYTES
from tests.simstream.wire.helpers import VALID


@given(
    st.text(max_size=20),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.text(max_size=40),
    st.binary(max_size=64),
    st.text(max_size=40),
)
def test_dead_letters_survive_a_round_trip(
    topic: str, partition: int, offset: int, reason: str, raw: bytes, detail: str
) -> None:
    letter = DeadLetter(topic, partition, offset, reason, raw, detail)
    assert DeadLetter.decode(letter.encode()) == letter


def test_a_dead_letter_keeps_the_reason_and_bytes_of_a_decode_error() -> None:
    error = decode_result(VALID[:-1])
    assert isinstance(error, DecodeError)
    letter = DeadLetter.from_error(error, "items", 2, 40)
    decoded = DeadLetter.decode(letter.encode())
    assert decoded.reason == "truncated"
    assert decoded.raw == VALID[:-1]
    assert (decoded.source_topic, decoded.partition, decoded.offset) == ("items", 2, 40)
    assert decoded.encode().startswith(DEAD_LETTER_MAGIC)


@pytest.mark.parametrize(
    "data",
    [VALID, b"SSDL", b"SSDL\x01" + struct.pack(">I", 2) + b"{}"],
    ids=["an item event", "a cut prefix", "a header without fields"],
)
def test_decoding_a_bad_dead_letter_raises_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        DeadLetter.decode(data)


def test_a_dead_letter_of_a_huge_record_carries_a_bounded_prefix_its_length_and_hash() -> None:
    raw = bytes(range(256)) * 6000  # 1.5 MB: over a producer's default message.max.bytes
    letter = DeadLetter("items", 1, 9, "bad_payload", raw, "x" * 10_000)
    encoded = letter.encode()
    assert len(encoded) < MAX_RAW_BYTES + 4 * MAX_DETAIL_CHARS + 1024
    decoded = DeadLetter.decode(encoded)
    assert decoded == letter
    assert decoded.raw == raw[:MAX_RAW_BYTES] and decoded.truncated
    assert decoded.raw_size == len(raw)
    assert decoded.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(decoded.detail) <= MAX_DETAIL_CHARS
    assert decoded.detail.startswith("x" * 4000) and decoded.detail.endswith(" more characters)")


def test_a_dead_letter_without_raw_size_describes_its_body_as_the_whole_record() -> None:
    header = b'{"topic":"items","partition":0,"offset":1,"reason":"truncated","ts":5,"size":2}'
    old = DEAD_LETTER_MAGIC + b"\x01" + struct.pack(">I", len(header)) + header + b"ab"
    letter = DeadLetter.decode(old)
    assert (letter.raw, letter.raw_size) == (b"ab", 2)
    assert letter.raw_sha256 == hashlib.sha256(b"ab").hexdigest() and not letter.truncated
