"""The test vectors of docs/wire.md: the documented bytes are what the code writes and reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from simstream.wire import (
    ArrayPayload,
    DeadLetter,
    EmbeddingRecord,
    ItemEvent,
    Op,
    VectorPayload,
)

SPEC = Path(__file__).parents[3] / "docs" / "wire.md"
Message = ItemEvent | EmbeddingRecord | DeadLetter

#: the values the vectors of docs/wire.md encode, by the name of their section.
EXAMPLES: dict[str, Message] = {
    "item-upsert": ItemEvent.upsert(
        "cat-1",
        VectorPayload.from_values([1.0, -0.5]),
        label="cat",
        metadata={"src": "demo"},
        event_time_ms=1700000000000,
    ),
    "item-upsert-array": ItemEvent.upsert(
        "img-7",
        ArrayPayload.from_array(np.array([[1, 2], [3, 4]], np.uint8)),
        event_time_ms=1700000000000,
    ),
    "item-delete": ItemEvent.delete("cat-1", event_time_ms=1700000000001),
    "embedding-upsert": EmbeddingRecord(
        Op.UPSERT,
        "cat-1",
        42,
        "v3",
        vector=np.array([0.5, -0.25], np.float32),
        label="cat",
        metadata={"src": "demo"},
        event_time_ms=1700000000000,
    ),
    "embedding-range": EmbeddingRecord.range_marker(40, 43, "v3"),
    "dead-letter": DeadLetter(
        "items",
        0,
        7,
        "bad_magic",
        b"NOPE",
        "Expected magic b'SSIE'. Received: b'NOPE'",
        1700000000002,
    ),
}


def documented_vectors() -> dict[str, bytes]:
    """Each ``### `name` `` section's ```hex block, as bytes."""
    found = re.findall(r"^### `([a-z-]+)`\n.*?^```hex\n(.*?)^```", SPEC.read_text(), re.M | re.S)
    return {name: bytes.fromhex(text) for name, text in found}


def _fields(message: Message) -> dict[str, object]:
    """The message's fields, a vector as its bytes (arrays have no plain ``==``)."""
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    if isinstance(fields.get("vector"), np.ndarray):
        fields["vector"] = fields["vector"].astype("<f4").tobytes()
    return fields


def test_the_spec_documents_a_vector_for_every_example() -> None:
    assert set(documented_vectors()) == set(EXAMPLES)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_a_documented_vector_is_the_encoding_of_its_example_and_decodes_back(name: str) -> None:
    data = documented_vectors()[name]
    example = EXAMPLES[name]
    assert example.encode() == data
    assert _fields(type(example).decode(data)) == _fields(example)
