"""One round-trip test for every pluggable strategy of `model`: losses and distances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import ops

from model import distances, losses

STRATEGIES: list[Any] = [
    *(distances.get(name) for name in distances.names()),
    losses.MultiSimilarityLoss("euclidean", alpha=1.5, beta=30.0, epsilon=0.2, lmda=0.4),
    losses.TripletLoss("sql2", positive_mining="easy", negative_mining="hard", soft_margin=True),
    losses.PNLoss("l1", margin=0.3),
    losses.CircleLoss(gamma=64.0, margin=0.3, reduction="sum"),
    losses.SoftNearestNeighborLoss(temperature=0.5),
    losses.SupConLoss("inner_product", temperature=0.2),
    losses.LiftedStructLoss("cosine", margin=0.5),
    losses.MultipleNegativesRankingLoss("euclidean", temperature=0.1),
    losses.ProxyAnchorLoss(num_classes=5, embedding_dim=3, alpha=16.0, delta=0.2),
    losses.XBMLoss(
        losses.CircleLoss(gamma=32.0), embedding_dim=3, memory_size=64, weight=0.5, warmup_steps=10
    ),
]


def _get(strategy: Any, identifier: Any) -> Any:
    module = distances if isinstance(strategy, distances.Distance) else losses
    return module.get(identifier)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: type(s).__name__)
def test_every_strategy_survives_get_config_and_keras_serialization(strategy: Any) -> None:
    from_config = _get(strategy, strategy.get_config())
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(strategy)))
    deserialized = keras.saving.deserialize_keras_object(serialized)
    resolved = _get(strategy, serialized)
    for copy in (from_config, deserialized, resolved):
        assert type(copy) is type(strategy)
        assert copy.get_config() == strategy.get_config()


def test_a_saved_model_reloads_with_its_loss_and_proxies(tmp_path: Path) -> None:
    loss = losses.ProxyAnchorLoss(num_classes=3, embedding_dim=2, alpha=8.0)
    inputs = keras.Input((4,))
    trainer = keras.Sequential(
        [keras.Model(inputs, keras.layers.Dense(2)(inputs)), loss.proxies_layer()]
    )
    trainer.compile(optimizer="adam", loss=loss)
    trainer.optimizer.build(trainer.trainable_variables)
    trainer.save(tmp_path / "trainer.keras")
    reloaded = keras.saving.load_model(tmp_path / "trainer.keras")
    proxies = reloaded.layers[-1]
    assert isinstance(proxies, losses.Proxies)
    np.testing.assert_allclose(
        ops.convert_to_numpy(proxies.proxies), ops.convert_to_numpy(loss.proxies)
    )
    assert reloaded.loss.get_config() == loss.get_config()
    attached = losses.ProxyAnchorLoss(3, 2, alpha=8.0, proxies=proxies)
    assert attached.proxies is proxies.proxies
