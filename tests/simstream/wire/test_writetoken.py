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


@given(
    st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True),
    st.dictionaries(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1), min_size=1),
)
def test_a_token_of_many_partitions_survives_a_round_trip_with_its_topic(
    topic: str, offsets: dict[int, int]
) -> None:
    tokens = [WriteToken(topic, p, o) for p, o in offsets.items()]

    decoded = WriteToken.decode_all(WriteToken.encode_all(tokens), topic)

    assert decoded == tuple(sorted(tokens, key=lambda t: t.partition))


def test_a_batch_token_names_the_highest_offset_of_each_partition() -> None:
    tokens = [WriteToken("items", 1, 9), WriteToken("items", 0, 4), WriteToken("items", 1, 12)]

    assert WriteToken.encode_all(tokens) == "items.p0.o4.p1.o12"
    assert WriteToken.decode_all("items.p0.o4.p1.o12") == (
        WriteToken("items", 0, 4),
        WriteToken("items", 1, 12),
    )
    assert WriteToken.decode_all("items.dlq.p2.o7") == (WriteToken("items.dlq", 2, 7),)


@pytest.mark.parametrize("text", ["items.p0.o4.p0.o5", "items.p0.o4.p1", "items", "items.p0.o4x"])
def test_a_malformed_batch_token_or_a_partition_named_twice_is_refused(text: str) -> None:
    with pytest.raises(DecodeError) as info:
        WriteToken.decode_all(text)
    assert info.value.reason == Reason.BAD_TOKEN


def test_tokens_of_different_topics_cannot_be_combined() -> None:
    with pytest.raises(ValueError, match="one topic"):
        WriteToken.encode_all([WriteToken("a", 0, 1), WriteToken("b", 0, 1)])
