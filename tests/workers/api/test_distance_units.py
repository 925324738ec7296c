"""An ``l2`` index reports the model's Euclidean distance, so thresholds apply in its units."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.registry import Registry
from simstream.stack.local import LocalStack
from tests.workers.api.conftest import (
    EMBEDDING_DIM,
    api_settings,
    publish_digits,
    register_cnn,
    start_serving,
)
from workers.api import create_app

pytestmark = pytest.mark.services

#: The calibrated threshold, in the model's (Euclidean) units.
THRESHOLD = 0.5


@pytest.fixture
def l2_client(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The API over a node whose index space is l2, serving a model with a calibrated threshold."""
    settings = api_settings(stack.settings, tmp_path_factory.mktemp("l2"), index_space="l2")
    version = register_cnn(
        settings, distance="euclidean", calibration={"threshold": THRESHOLD, "f1": 1.0}
    )
    encoder = Registry(settings.registry_dir).load(version)
    node = start_serving(settings, encoder, publish_digits(settings))
    try:
        with TestClient(create_app(settings, node)) as client:
            yield client
    finally:
        node.stop()


def test_an_l2_index_applies_a_euclidean_threshold_to_euclidean_distances(
    l2_client: TestClient,
) -> None:
    stored = l2_client.get("/v1/items/digit-0030", params={"vector": True}).json()["vector"]
    unit = np.asarray(stored, dtype=np.float64)
    assert unit.shape == (EMBEDDING_DIM,)
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-4)
    # 1.6 × a unit vector is 0.6 from it (squared: 0.36) and at least 0.6 from every
    # other unit vector: within the threshold in squared units, beyond it in Euclidean.
    query = (1.6 * unit).tolist()

    lookup = l2_client.post("/v1/lookup", json={"vector": query, "k": 3}).json()
    answer = l2_client.post("/v1/classify", json={"vector": query, "k": 3}).json()

    nearest = lookup["neighbors"][0]
    assert nearest["id"] == "digit-0030"
    assert nearest["distance"] == pytest.approx(0.6, abs=1e-4)
    assert answer["threshold"] == THRESHOLD
    assert answer["threshold_source"] == "model"
    assert answer["known"] is False, answer
    assert answer["label"] == "unknown"
