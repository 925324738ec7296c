"""FastAPI's native OpenTelemetry: off by default, on with ``SIMSTREAM_API_OTEL``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace

from tests.workers.api.conftest import Served
from workers.api.app import create_app


class _RecordingProvider(trace.TracerProvider):
    """A configured provider (not one of the API's deferred ones) that counts tracers."""

    def __init__(self) -> None:
        self.tracers = 0

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        self.tracers += 1
        return trace.NoOpTracer()


@pytest.mark.parametrize("otel", [False, True])
def test_fastapi_traces_requests_only_when_asked(
    served: Served, monkeypatch: pytest.MonkeyPatch, otel: bool
) -> None:
    provider = _RecordingProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    settings = served.settings.model_copy(update={"api_otel": otel})

    with TestClient(create_app(settings, served.node)) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200

    assert (provider.tracers > 0) is otel
