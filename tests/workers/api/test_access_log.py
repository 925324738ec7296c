"""The access log under a flood: a bounded number of lines per second, the rest counted."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from workers.api import middleware
from workers.api.access_log import AccessLogBudget
from workers.api.middleware import RequestContextMiddleware


class Lines:
    """Records the access-log calls (the process's structlog configuration may have
    cached its loggers before a test could capture them)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, object]] = []

    def info(self, event: str, **fields: object) -> None:
        self.lines.append({"event": event, **fields})

    debug = info


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_route_and_status_writes_at_most_its_lines_a_second_and_counts_the_rest() -> None:
    clock = Clock()
    budget = AccessLogBudget(3, clock=clock)

    first_second = [budget.take("/v1/lookup", 422) for _ in range(5)]
    other_status = budget.take("/v1/lookup", 200)
    clock.now += 1.0
    next_second = [budget.take("/v1/lookup", 422) for _ in range(2)]

    assert first_second == [0, 0, 0, None, None]
    assert other_status == 0
    assert next_second == [2, 0], "the first line of the next second says 2 were left out"
    assert AccessLogBudget(0, clock=clock).take("/v1/lookup", 200) is None


def refuse(request: Request) -> PlainTextResponse:
    return PlainTextResponse("no", status_code=422)


def test_a_flood_of_refused_requests_writes_a_bounded_number_of_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, logs = Clock(), Lines()
    monkeypatch.setattr(middleware, "log", logs)
    app = RequestContextMiddleware(Starlette(routes=[Route("/refuse", refuse)]), 5)
    app.budget = AccessLogBudget(5, clock=clock)

    with TestClient(app) as client:
        statuses = [client.get("/refuse").status_code for _ in range(40)]
        clock.now += 1.0
        client.get("/refuse")

    lines = [e for e in logs.lines if e["event"] == "api.request"]
    assert statuses == [422] * 40
    assert len(lines) == 6
    assert [e.get("suppressed", 0) for e in lines] == [0, 0, 0, 0, 0, 35]
    assert {(e["route"], e["status"]) for e in lines} == {("/refuse", 422)}
