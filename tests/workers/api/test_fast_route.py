"""The lookup routes answered without FastAPI's request machinery (`FastRoute`): the same
answers and the same refusals as the documented routes, which they hand refusals to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.api.fast_route import FastRoute

READ_TOKEN = "read-token-1"


def _apps(served: Served, **settings: Any) -> tuple[FastAPI, FastAPI]:
    """Two apps over the same node: as built, and without its fast routes."""
    config = served.settings.model_copy(update=settings)
    fast = create_app(config, served.node)
    documented = create_app(config, served.node)
    documented.router.routes[:] = [
        r for r in documented.router.routes if not isinstance(r, FastRoute)
    ]
    assert any(isinstance(r, FastRoute) for r in fast.router.routes)
    return fast, documented


@pytest.fixture(scope="module")
def clients(served: Served) -> Iterator[tuple[TestClient, TestClient]]:
    fast, documented = _apps(served, api_read_tokens=READ_TOKEN)
    with TestClient(fast) as a, TestClient(documented) as b:
        yield a, b


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each request the fast routes saw was answered by them (True) or handed
    to the documented route (False)."""
    seen: list[bool] = []
    original = FastRoute._accepted

    def spy(self: FastRoute, *args: Any) -> Any:
        request = original(self, *args)
        seen.append(request is not None)
        return request

    monkeypatch.setattr(FastRoute, "_accepted", spy)
    return seen


def _vector(served: Served) -> list[float]:
    item = served.node.current().index.get(served.digits.ids[0])
    assert item is not None
    return [float(x) for x in item.vector]


def _auth(token: str = READ_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


def test_fast_lookups_answer_what_the_documented_routes_answer(
    clients: tuple[TestClient, TestClient], served: Served, accepted: list[bool]
) -> None:
    fast, documented = clients
    vector = _vector(served)
    requests = [
        ("/v1/lookup", {"vector": vector, "k": 5, "fresh": True}),
        ("/v1/lookup", {"id": served.digits.ids[3], "k": 4, "fresh": True}),
        ("/v1/lookup", {"vector": vector, "k": 3, "filter": {"labels": ["7"]}, "fresh": True}),
        ("/v1/lookup/batch", {"queries": [{"vector": vector}, {"id": served.digits.ids[9]}]}),
    ]
    for path, body in requests:
        a = fast.post(path, json=body, headers=_auth())
        b = documented.post(path, json=body, headers=_auth())

        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json()
        assert a.headers["content-type"] == "application/json"
        assert a.headers["x-request-id"]
        assert a.headers["x-cache"] in {"bypass", "miss", "hit"}
    assert accepted == [True] * len(requests)
    assert fast.post("/v1/lookup", json=requests[0][1], headers=_auth()).json()["neighbors"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"vector": "0.1, 0.2", "k": 3}, _auth(), 422),  # not a list (pydantic)
        ({"vector": [0.1, 0.2], "nope": 1}, _auth(), 422),  # unknown field
        (b"{not json", _auth(), 422),
        ({"vector": [0.1, 0.2], "k": 3}, {}, 401),  # no token
        ({"vector": [0.1, 0.2], "k": 3}, _auth("unknown"), 401),
        ({"vector": [0.1, 0.2], "k": 3}, {"Authorization": "Basic " + READ_TOKEN}, 401),
        (b'{"vector": [0.1, 0.2]}', {**_auth(), "Content-Type": "text/plain"}, 422),
        (b'{"vector": [0.1, 0.2]}', {**_auth(), "Content-Type": ""}, 422),
    ],
)
def test_refusals_are_the_documented_routes_own(
    clients: tuple[TestClient, TestClient],
    accepted: list[bool],
    body: Any,
    headers: dict[str, str],
    status: int,
) -> None:
    fast, documented = clients
    send = {"content": body} if isinstance(body, bytes) else {"json": body}
    headers = {"Content-Type": "application/json", **headers}

    a = fast.post("/v1/lookup", headers=headers, **send)
    b = documented.post("/v1/lookup", headers=headers, **send)

    assert a.status_code == b.status_code == status, a.text
    assert _without_request_id(a.json()) == _without_request_id(b.json())
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
    assert accepted == [False]  # handed to the documented route, body replayed


def test_errors_raised_on_the_fast_path_go_through_the_app_handlers(
    clients: tuple[TestClient, TestClient], served: Served, accepted: list[bool]
) -> None:
    fast, documented = clients
    wrong_size = {"vector": [0.5] * 3, "k": 2, "fresh": True}
    unknown = {"id": "no-such-item", "k": 2}
    too_many = {"vector": _vector(served), "k": 10**6}

    for body, status in ((wrong_size, 422), (unknown, 404), (too_many, 422)):
        a = fast.post("/v1/lookup", json=body, headers=_auth())
        b = documented.post("/v1/lookup", json=body, headers=_auth())
        assert a.status_code == b.status_code == status, a.text
        assert _without_request_id(a.json()) == _without_request_id(b.json())
    assert accepted == [True] * 3  # valid bodies: refused by the search, not handed back


def test_fast_lookups_are_timed_under_the_route_template(
    clients: tuple[TestClient, TestClient], served: Served
) -> None:
    fast, _ = clients
    labels = {"route": "/v1/lookup", "method": "POST", "status": "200"}
    before = REGISTRY.get_sample_value("simstream_api_request_seconds_count", labels) or 0.0
    vector = _vector(served)

    assert fast.post("/v1/lookup", json={"vector": vector}, headers=_auth()).status_code == 200

    after = REGISTRY.get_sample_value("simstream_api_request_seconds_count", labels)
    assert after == before + 1


def test_the_schema_still_documents_the_lookup_routes(
    clients: tuple[TestClient, TestClient],
) -> None:
    fast, documented = clients

    schema = fast.get("/openapi.json").json()

    assert schema == documented.get("/openapi.json").json()
    assert "post" in schema["paths"]["/v1/lookup"]
    assert "post" in schema["paths"]["/v1/lookup/batch"]
