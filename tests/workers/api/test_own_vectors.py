"""Your own vectors through the real stack: registered with ``simstream models
register-vectors``, published with ``simstream publish --npz``, embedded by the
workers' range embedder, indexed by a real node and searched through the API."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from model.registry import Encoder, Registry
from simstream.cli.main import app as cli_app
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.stack.local import LocalStack
from tests.waiting import wait_for
from tests.workers.api.conftest import api_settings, embed_pending
from tests.workers.api.test_range_search import exact_distances
from tests.workers.ingest.dead_letters import read_dead_letters
from workers.api import create_app
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

pytestmark = pytest.mark.services

DIM = 24
COUNT = 60


@dataclass
class OwnVectors:
    """A node serving COUNT published float vectors of a vectors model."""

    settings: Settings
    node: IndexNode
    client: TestClient
    vectors: np.ndarray
    ids: list[str]
    registered: str
    encoder: Encoder


def _cli(settings: Settings, *args: str) -> str:
    """Run ``simstream ARGS`` in this process, pointed at ``settings``."""
    env = {
        "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SIMSTREAM_TOPIC_ITEMS": settings.topic_items,
        "SIMSTREAM_PARTITIONS": str(settings.partitions),
        "SIMSTREAM_DATA_DIR": str(settings.data_dir),
        "SIMSTREAM_KAFKA_CLIENT_CONFIG": json.dumps(settings.kafka_client_config),
    }
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(cli_app, list(args), env=env)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert result.exit_code == 0, result.output
    return result.output


def _npz(path: Path, x: np.ndarray, prefix: str) -> str:
    np.savez(path, x=x, ids=np.array([f"{prefix}-{i}" for i in range(len(x))]))
    return str(path)


@pytest.fixture(scope="module", params=["cosine", "l2"])
def own(
    request: pytest.FixtureRequest,
    stack: LocalStack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OwnVectors]:
    """Vectors of a model registered with the request's distance, on a node whose
    SIMSTREAM_INDEX_SPACE is the default (cosine): the model's own space wins."""
    distance = request.param
    tmp_path = tmp_path_factory.mktemp(f"own-{distance}")
    settings = api_settings(stack.settings, tmp_path)
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    registered = _cli(
        settings,
        "models",
        "register-vectors",
        "--dim",
        str(DIM),
        "--distance",
        distance,
    )
    vectors = np.random.default_rng(1).normal(size=(COUNT, DIM)).astype(np.float32)
    _cli(settings, "publish", "--npz", _npz(tmp_path / "good.npz", vectors, "vec"))
    bad = {
        "dim": np.ones((2, DIM - 1), np.float32),
        "int": np.ones((1, DIM), np.int32),
        "nan": np.full((1, DIM), np.nan, np.float32),
    }
    for name, x in bad.items():
        _cli(settings, "publish", "--npz", _npz(tmp_path / f"{name}.npz", x, name))
    registry = Registry(settings.registry_dir)
    encoder = registry.load()
    node = IndexNode(NodeConfig.from_settings(settings), control_interval_s=0.2)
    node.start()
    try:
        wait_for(lambda: node.serving is not None, 30, message="a serving generation")
        embed_pending(settings, encoder, node)
        wait_for(lambda: len(node.current().index) == COUNT, 30, message="indexed")
        with TestClient(create_app(settings, node)) as client:
            ids = [f"vec-{i}" for i in range(COUNT)]
            yield OwnVectors(settings, node, client, vectors, ids, registered, encoder)
    finally:
        node.stop()


def test_a_lookup_by_vector_returns_the_exact_nearest_published_vectors(own: OwnVectors) -> None:
    index = own.node.current().index
    queries = np.random.default_rng(2).normal(size=(5, DIM)).astype(np.float32)

    for query in queries:
        response = own.client.post("/v1/lookup", json={"vector": query.tolist(), "k": 10})

        assert response.status_code == 200, response.text
        exact = exact_distances(index, query)
        nearest = sorted(exact, key=exact.__getitem__)[:10]
        got = response.json()["neighbors"]
        assert [n["id"] for n in got] == nearest
        np.testing.assert_allclose(
            [n["distance"] for n in got], [exact[i] for i in nearest], rtol=1e-4, atol=1e-4
        )
    assert "registered v1 (your own vectors" in own.registered


def test_the_index_holds_the_vectors_in_the_models_own_space(own: OwnVectors) -> None:
    index = own.node.current().index
    stored = np.asarray(index.get("vec-3").vector)  # type: ignore[union-attr]
    space = Registry(own.settings.registry_dir).get().config["index_space"]

    assert index.space == space
    if space == "cosine":
        np.testing.assert_allclose(
            stored, own.vectors[3] / np.linalg.norm(own.vectors[3]), atol=1e-6
        )
    else:
        np.testing.assert_array_equal(stored, own.vectors[3])


def test_vectors_of_another_size_dtype_or_with_nan_are_dead_lettered_with_their_reason(
    own: OwnVectors,
) -> None:
    by_reason = sorted((letter.reason, letter.detail) for letter in read_dead_letters(own.settings))

    assert len(by_reason) == 4, by_reason
    assert all(reason == "bad_payload" for reason, _ in by_reason)
    details = " | ".join(detail for _, detail in by_reason)
    assert details.count(f"Expected shape ({DIM},). Received: shape=({DIM - 1},)") == 2
    assert "Expected floating-point values" in details and "dtype=int32" in details
    assert "Expected finite values" in details
    assert own.node.current().index.get("dim-0") is None


@pytest.mark.parametrize(
    "query",
    [{"array": [0.5] * DIM}, {"image": "iVBORw0KGgo="}],
    ids=["array", "image"],
)
def test_a_raw_payload_query_against_a_vectors_model_is_a_400_asking_for_a_vector(
    own: OwnVectors, query: dict[str, object]
) -> None:
    response = own.client.post("/v1/lookup", json={**query, "k": 3})

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "unsupported_query"
    assert "It indexes your own vectors" in response.json()["detail"]
    assert "send the query as `vector`" in response.json()["detail"]


def test_an_item_written_through_the_api_as_a_float_array_is_indexed_as_it_is(
    own: OwnVectors,
) -> None:
    vector = np.linspace(-1.0, 1.0, DIM)
    written = own.client.post(
        "/v1/items", json={"id": "api-vec", "array": vector.tolist(), "label": "api"}
    )
    as_image = own.client.post("/v1/items", json={"id": "api-img", "image": "iVBORw0KGgo="})
    embed_pending(own.settings, own.encoder, own.node)

    found = own.client.post(
        "/v1/lookup", json={"vector": vector.tolist(), "k": 1, "after": written.json()["token"]}
    )

    assert written.status_code == 202, written.text
    assert (as_image.status_code, as_image.json()["code"]) == (422, "unsupported_query")
    [nearest] = found.json()["neighbors"]
    assert (nearest["id"], nearest["label"]) == ("api-vec", "api")
    assert nearest["distance"] == pytest.approx(0.0, abs=1e-5)
