"""Dead letters: round trips, reasons kept, bad bytes refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simstream.errors import DecodeError
from simstream.wire import DEAD_LETTER_MAGIC, DeadLetter, decode_result
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
