"""A short self-supervised run improves k-NN recall over the untrained encoder, without labels."""

from __future__ import annotations

import numpy as np
import pytest

from model import datasets
from model.ssl import knn_recall, train_ssl
from model.training import TrainConfig

ENCODER = {"name": "cnn", "filters": [8, 16], "convs_per_block": 1}


@pytest.mark.parametrize("method", ["simclr", "barlowtwins"])
def test_a_short_self_supervised_run_improves_knn_recall_on_held_out_digits(method: str) -> None:
    data = datasets.load_digits()
    order = np.random.default_rng(0).permutation(len(data))
    unlabelled, held_out = data.subset(order[:800]), data.subset(order[800:1300])
    config = TrainConfig(
        encoder=ENCODER,
        embedding_dim=32,
        seed=0,
        verbose=0,
        learning_rate=3e-3,
        validation_split=0.0,
    )
    untrained = train_ssl(
        unlabelled, TrainConfig(**{**config.to_dict(), "epochs": 0}), method=method
    )
    # Labels are not an input: scrambling them changes nothing.
    scrambled = unlabelled.subset(np.arange(len(unlabelled)))
    scrambled.y[:] = np.random.default_rng(1).permutation(scrambled.y)

    trained = train_ssl(scrambled, TrainConfig(**{**config.to_dict(), "epochs": 5}), method=method)

    before = knn_recall(untrained.encoder(), held_out)
    after = knn_recall(trained.encoder(), held_out)
    assert trained.history["loss"][-1] < trained.history["loss"][0]
    assert after > before + 0.01, (before, after)
