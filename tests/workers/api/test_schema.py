"""Property-based: no request generated from the OpenAPI document makes the API answer 5xx.

The document does not depend on the node, so it is taken at import time from an
app over an unstarted node; every generated case is then sent in-process to an
app over the shared, serving node.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from simstream.settings import Settings
from tests.workers.api.conftest import Served
from workers.api import create_app
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        offline = Settings.load(data_dir=Path(tmp))
        return create_app(offline, IndexNode(NodeConfig.from_settings(offline))).openapi()


schema = schemathesis.openapi.from_dict(_document())


@pytest.fixture(scope="module")
def live_app(served: Served) -> Iterator[FastAPI]:
    """An app over the serving node whose retrain tasks go to a scratch Redis DB."""
    broker = served.settings.celery_broker_url.rsplit("/", 1)[0] + "/6"
    app_settings = served.settings.model_copy(update={"celery_broker_url": broker})
    yield create_app(app_settings, served.node)
    redis.Redis.from_url(broker).flushdb()


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_makes_the_api_answer_a_server_error(
    case: Any, live_app: FastAPI
) -> None:
    response = case.call(app=live_app)

    assert response.status_code < 500, (case.method, case.path, response.text[:500])
