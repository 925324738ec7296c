"""Write tokens: compact text, round trips, invalid text refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simstream.errors import DecodeError
from simstream.wire import Reason, WriteToken


@given(
    st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
)
def test_write_tokens_survive_a_round_trip(topic: str, partition: int, offset: int) -> None:
    token = WriteToken(topic, partition, offset)
    assert WriteToken.decode(token.encode()) == token


def test_a_write_token_is_compact_text() -> None:
    assert WriteToken("items", 3, 1234).encode() == "items.p3.o1234"
    assert WriteToken.decode("items.dlq.p0.o7") == WriteToken("items.dlq", 0, 7)


@pytest.mark.parametrize(
    "text",
    ["", "p3.o1", "items.p3", "items.p-1.o2", "items.p3.o", "items.p03.o1", "it ems.p1.o1",
     "items.p3.o1x", "items.p99999999999.o1", "items.p1.o99999999999999999999", "ítems.p1.o1"],
)  # fmt: skip
def test_decoding_an_invalid_write_token_raises_a_decode_error(text: str) -> None:
    with pytest.raises(DecodeError) as caught:
        WriteToken.decode(text)
    assert caught.value.reason == Reason.BAD_TOKEN
