"""The test vectors of docs/wire.md: the documented bytes are what the code writes and reads.

Each vector is a ``### `name` `` section holding a ```python block (the value)
and a ```hex block (its encoding); the value is evaluated like a doctest.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from simstream import wire

SPEC = Path(__file__).parents[3] / "docs" / "wire.md"
VECTOR = re.compile(r"^### `([a-z-]+)`\n+```python\n(.*?)^```\n.*?^```hex\n(.*?)^```", re.M | re.S)
Message = wire.ItemEvent | wire.EmbeddingRecord | wire.DeadLetter


def documented_vectors() -> dict[str, tuple[Message, bytes]]:
    """Each section's value and bytes, by its name."""
    names = {"np": np, **{name: getattr(wire, name) for name in wire.__all__}}
    return {
        name: (eval(code, names), bytes.fromhex(text))
        for name, code, text in VECTOR.findall(SPEC.read_text())
    }


def _fields(message: Message) -> dict[str, object]:
    """The message's fields, a vector as its bytes (arrays have no plain ``==``)."""
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    if isinstance(fields.get("vector"), np.ndarray):
        fields["vector"] = fields["vector"].astype("<f4").tobytes()
    return fields


def test_the_spec_has_vectors_for_upserts_deletes_records_and_dead_letters() -> None:
    assert set(documented_vectors()) == {
        "item-upsert",
        "item-upsert-array",
        "item-delete",
        "embedding-upsert",
        "embedding-range",
        "dead-letter",
    }


@pytest.mark.parametrize("name", sorted(documented_vectors()))
def test_a_documented_vector_is_the_encoding_of_its_value_and_decodes_back(name: str) -> None:
    example, data = documented_vectors()[name]
    assert example.encode() == data
    assert _fields(type(example).decode(data)) == _fields(example)
