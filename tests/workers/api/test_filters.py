"""Metadata operators and boolean groups in lookup filters, against the real server.

The served digits carry ``parity`` ("even"/"odd") and ``n`` (their position,
0…119). Each lookup asks for every item (k above the item count), so the ids it
returns are exactly the items that pass its filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.workers.api.conftest import Served

pytestmark = pytest.mark.services

Meta = dict[str, Any]

CASES: list[tuple[str, dict[str, Any], Callable[[str, Meta], bool]]] = [
    ("eq", {"eq": {"parity": "odd"}}, lambda label, m: m["parity"] == "odd"),
    ("eq of a number as float", {"eq": {"n": 7.0}}, lambda label, m: m["n"] == 7),
    ("ne", {"ne": {"parity": "odd"}}, lambda label, m: m["parity"] != "odd"),
    ("in", {"in": {"n": [3, 50, 1000]}}, lambda label, m: m["n"] in (3, 50)),
    ("gt", {"gt": {"n": 100}}, lambda label, m: m["n"] > 100),
    ("gte", {"gte": {"n": 100}}, lambda label, m: m["n"] >= 100),
    ("lt", {"lt": {"n": 10.5}}, lambda label, m: m["n"] < 10.5),
    ("lte", {"lte": {"n": 10}}, lambda label, m: m["n"] <= 10),
    ("a range on text matches nothing", {"gt": {"parity": 0}}, lambda label, m: False),
    ("exists", {"exists": "parity"}, lambda label, m: True),
    ("exists of a missing key", {"exists": "colour"}, lambda label, m: False),
    ("exists of every key of a list", {"exists": ["n", "colour"]}, lambda label, m: False),
    ("ne of a number", {"ne": {"n": 3.0}}, lambda label, m: m["n"] != 3),
    (
        "and",
        {"and": [{"gte": {"n": 20}}, {"lt": {"n": 40}}, {"eq": {"parity": "even"}}]},
        lambda label, m: 20 <= m["n"] < 40 and m["parity"] == "even",
    ),
    (
        "or",
        {"or": [{"lt": {"n": 5}}, {"in": {"n": [60, 61]}}, {"labels": ["9"]}]},
        lambda label, m: m["n"] < 5 or m["n"] in (60, 61) or label == "9",
    ),
    ("not", {"not": {"gte": {"n": 10}}}, lambda label, m: m["n"] < 10),
    (
        "operators beside labels and metadata (all hold)",
        {"labels": ["2", "3"], "metadata": {"parity": "odd"}, "lt": {"n": 40}},
        lambda label, m: label in ("2", "3") and m["parity"] == "odd" and m["n"] < 40,
    ),
    (
        "nested groups",
        {"or": [{"and": [{"labels": ["1"]}, {"not": {"lt": {"n": 18}}}]}, {"eq": {"n": 0}}]},
        lambda label, m: (label == "1" and m["n"] >= 18) or m["n"] == 0,
    ),
]


def _expected(served: Served, passes: Callable[[str, Meta], bool]) -> set[str]:
    digits = served.digits
    return {
        item_id
        for i, item_id in enumerate(digits.ids)
        if passes(
            digits.labels[i],
            {"parity": "even" if int(digits.labels[i]) % 2 == 0 else "odd", "n": i},
        )
    }


@pytest.mark.parametrize(("flt", "passes"), [pytest.param(f, p, id=name) for name, f, p in CASES])
def test_a_lookup_returns_exactly_the_items_its_filter_passes(
    client: TestClient, served: Served, flt: dict[str, Any], passes: Callable[[str, Meta], bool]
) -> None:
    response = client.post(
        "/v1/lookup", json={"id": served.digits.ids[-1], "k": 1000, "filter": flt}
    )

    assert response.status_code == 200, response.text
    found = {n["id"] for n in response.json()["neighbors"]} & set(served.digits.ids)
    assert found == _expected(served, passes) - {served.digits.ids[-1]}
    assert response.json()["exhaustive"] is True


def test_a_batch_applies_an_operator_filter_to_every_query(
    client: TestClient, served: Served
) -> None:
    flt = {"and": [{"gte": {"n": 30}}, {"lt": {"n": 34}}]}
    response = client.post(
        "/v1/lookup/batch",
        json={"queries": [{"id": "digit-0001"}, {"id": "digit-0002"}], "k": 10, "filter": flt},
    )

    assert response.status_code == 200, response.text
    for result in response.json()["results"]:
        found = {n["id"] for n in result["neighbors"]} & set(served.digits.ids)
        assert found == {f"digit-{i:04d}" for i in range(30, 34)}


def test_equal_filters_share_a_cache_entry_and_different_ones_do_not(
    client: TestClient, served: Served
) -> None:
    query = {"id": served.digits.ids[5], "k": 5}
    answers = [
        client.post("/v1/lookup", json={**query, "filter": flt})
        for flt in (
            {"in": {"n": [1, 2, 3]}},
            {"in": {"n": [3, 2, 1]}},
            {"in": {"n": [1, 2]}},
        )
    ]

    assert [a.headers["X-Cache"] for a in answers] == ["miss", "hit", "miss"]
    assert len(answers[2].json()["neighbors"]) == 2


BAD_FILTERS: list[tuple[dict[str, Any], str, str]] = [
    ({"and": [{"eq": {"n": 1}}, {"gt": {"n": "x"}}]}, "filter.and[1].gt.n", "valid number"),
    ({"gt": {"n": True}}, "filter.gt.n", "valid number"),
    ({"or": []}, "filter.or", "at least 1"),
    ({"in": {"n": []}}, "filter.in.n", "at least 1"),
    ({"not": {"between": {"n": 1}}}, "filter.not.between", "Unexpected field"),
    ({"eq": {}}, "filter.eq", "at least 1"),
    ({"lte": {"n": "Infinity"}}, "filter.lte.n", "valid number"),
]


@pytest.mark.parametrize(("flt", "path", "message"), BAD_FILTERS)
def test_an_invalid_filter_is_a_422_pointing_at_the_offending_clause(
    client: TestClient, flt: dict[str, Any], path: str, message: str
) -> None:
    response = client.post("/v1/lookup", json={"id": "digit-0001", "filter": flt})

    body = response.json()
    assert response.status_code == 422, response.text
    assert body["code"] == "invalid_filter"
    assert [e["field"] for e in body["errors"]] == [path]
    assert f"`{path}`" in body["detail"]
    assert message in body["detail"]
