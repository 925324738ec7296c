"""Auth scopes, stats, models, retrain, probes, metrics and request ids."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from tests.workers.api.conftest import Served, api_settings
from workers.api import create_app
from workers.celery_app import TRAIN_QUEUE
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services

READ, ADMIN = "read-token-1", "admin-token-1"


@pytest.fixture
def secured(served: Served) -> Iterator[TestClient]:
    """An app over the shared node asking for tokens, with its own Celery broker DB."""
    broker = served.settings.celery_broker_url.rsplit("/", 1)[0] + "/5"
    settings = served.settings.model_copy(
        update={"api_read_tokens": READ, "api_admin_tokens": ADMIN, "celery_broker_url": broker}
    )
    with TestClient(create_app(settings, served.node)) as client:
        yield client
    redis.Redis.from_url(broker).flushdb()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_valid_token_a_secured_api_answers_401_with_a_challenge(
    secured: TestClient,
) -> None:
    missing = secured.post("/v1/lookup", json={"id": "digit-0001"})
    wrong = secured.post("/v1/lookup", json={"id": "digit-0001"}, headers=bearer("guess"))
    basic = secured.get("/v1/stats", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert missing.status_code == wrong.status_code == basic.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Expected an 'Authorization: Bearer <token>' header" in missing.json()["detail"]
    assert "invalid_token" in wrong.headers["WWW-Authenticate"]


def test_a_read_token_reads_but_cannot_write_or_retrain(secured: TestClient) -> None:
    lookup = secured.post("/v1/lookup", json={"id": "digit-0001"}, headers=bearer(READ))
    stats = secured.get("/v1/stats", headers=bearer(READ))
    write = secured.delete("/v1/items/digit-0001", headers=bearer(READ))
    retrain = secured.post("/v1/admin/retrain", headers=bearer(READ))

    assert lookup.status_code == stats.status_code == 200
    assert write.status_code == retrain.status_code == 403
    assert retrain.json()["detail"] == (
        "Forbidden. Expected a token with the admin scope. Received: a read token"
    )


def test_an_admin_token_sends_the_retrain_task_to_the_train_queue(
    secured: TestClient, served: Served
) -> None:
    response = secured.post("/v1/admin/retrain", headers=bearer(ADMIN))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["task"] == "simstream.retrain"
    assert body["queue"] == TRAIN_QUEUE
    broker = served.settings.celery_broker_url.rsplit("/", 1)[0] + "/5"
    [raw] = redis.Redis.from_url(broker).lrange(TRAIN_QUEUE, 0, -1)
    message = json.loads(raw)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert message["headers"]["id"] == body["task_id"]
    assert message["headers"]["task"] == "simstream.retrain"
    assert (args, kwargs) == ([], {"triggered_by": "api"})


def test_probes_metrics_and_the_page_need_no_token(secured: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


def test_stats_describe_shards_counts_lag_freshness_and_the_cache(
    client: TestClient, served: Served
) -> None:
    stats = client.get("/v1/stats").json()

    assert stats["serving"] == stats["wanted"] == served.version
    assert stats["items"] >= len(served.digits.ids)
    generation = stats["generations"][served.version]
    assert [s["partition"] for s in generation["shards"]] == [0, 1]
    assert sum(s["live"] for s in generation["shards"]) == stats["items"]
    assert {"tombstones", "lag_records", "freshness", "snapshot_age_s"} <= generation.keys()
    assert stats["freshness"]["samples"] > 0
    assert stats["cache"]["backend"] == "redis"


def test_models_list_versions_with_metrics_the_active_one_and_the_history(
    client: TestClient, served: Served
) -> None:
    models = client.get("/v1/models").json()

    assert models["active"] == models["serving"] == served.version
    [version] = models["versions"]
    assert version["embedding_dim"] == 16
    assert version["metrics"]["calibration"]["threshold"] > 0
    assert models["history"][-1]["action"] == "promote"


def test_ready_when_serving_and_503_with_the_reason_when_no_model_is_active(
    client: TestClient, tmp_path_factory: pytest.TempPathFactory, served: Served
) -> None:
    idle_settings = api_settings(served.settings, tmp_path_factory.mktemp("idle"))
    with TestClient(
        create_app(idle_settings, IndexNode(NodeConfig.from_settings(idle_settings)))
    ) as idle:
        not_ready = idle.get("/readyz")
        lookup = idle.post("/v1/lookup", json={"id": "x"})
        alive = idle.get("/healthz")

    assert client.get("/readyz").json()["ready"] is True
    assert not_ready.status_code == 503
    assert not_ready.json() == {
        "ready": False,
        "reason": "no generation is serving",
        "node": idle_settings.cluster_node_id,
        "partitions": list(range(idle_settings.partitions)),
    }
    assert lookup.status_code == 503
    assert "No index generation is serving yet" in lookup.json()["detail"]
    assert alive.status_code == 200


def test_a_request_id_is_kept_or_made_and_latency_is_labelled_by_route_template(
    client: TestClient,
) -> None:
    kept = client.get("/v1/items/digit-0003", headers={"X-Request-ID": "trace-42"})
    made = client.get("/v1/items/digit-0004", headers={"X-Request-ID": "bad id with spaces"})
    metrics = client.get("/metrics").text

    assert kept.headers["X-Request-ID"] == "trace-42"
    assert len(made.headers["X-Request-ID"]) == 32
    assert 'route="/v1/items/{item_id}",status="200"' in metrics.replace('method="GET",', "")
    assert "digit-0003" not in metrics
    assert "simstream_api_request_seconds_bucket" in metrics


def test_the_openapi_document_describes_every_route_with_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    assert document["info"]["title"] == "simstream lookup API"
    paths = document["paths"]
    for path, method in [
        ("/v1/lookup", "post"),
        ("/v1/lookup/batch", "post"),
        ("/v1/classify", "post"),
        ("/v1/items", "post"),
        ("/v1/items", "get"),
        ("/v1/items/{item_id}", "get"),
        ("/v1/items/{item_id}", "delete"),
        ("/v1/items/{item_id}/image", "get"),
        ("/v1/stats", "get"),
        ("/v1/models", "get"),
        ("/v1/admin/retrain", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
        assert paths[path][method]["description"], (path, method)
    assert document["components"]["schemas"]["LookupRequest"]["examples"]
    assert "HTTPBearer" in document["components"]["securitySchemes"]


def test_the_admin_runs_route_lists_recorded_retrain_runs_newest_first(
    secured: TestClient, served: Served
) -> None:
    from workers.retrain.runs import runs_path

    path = runs_path(served.settings.registry_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {"run_id": "r1", "status": "done", "decision": "rejected", "triggered_by": "api"},
        {"run_id": "r2", "status": "done", "decision": "promoted", "triggered_by": "schedule"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    try:
        read = secured.get("/v1/admin/runs", headers=bearer(READ))
        admin = secured.get("/v1/admin/runs", headers=bearer(ADMIN))
    finally:
        path.unlink()

    assert read.status_code == 403
    assert admin.status_code == 200, admin.text
    assert [r["decision"] for r in admin.json()["runs"]] == ["promoted", "rejected"]


def test_metrics_name_the_serving_model_version_in_an_info_metric(
    client: TestClient, served: Served
) -> None:
    metrics = client.get("/metrics").text

    assert f'simstream_model_info{{version="{served.version}"}} 1.0' in metrics
    assert "simstream_active_model_version" not in metrics
