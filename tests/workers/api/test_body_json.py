"""Response bodies are compact UTF-8 JSON, whatever an item's metadata holds."""

from __future__ import annotations

import json

from workers.api.searcher import _dumps


def test_neighbours_serialise_as_compact_utf8_json() -> None:
    rows = [{"id": "é-1", "distance": 0.125, "label": None, "metadata": {"n": 3, "ok": True}}]

    assert (
        _dumps(rows)
        == '[{"id":"é-1","distance":0.125,"label":null,"metadata":{"n":3,"ok":true}}]'.encode()
    )


def test_metadata_with_an_integer_beyond_64_bits_is_still_served() -> None:
    rows = [{"id": "a", "metadata": {"big": 2**70}}]

    body = _dumps(rows)

    assert json.loads(body) == rows
