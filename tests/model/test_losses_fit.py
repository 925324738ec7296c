"""Every loss trains a tiny encoder through `model.fit` (TensorFlow backend, a few steps)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from keras import ops

from model import losses

CLASSES, PER_CLASS, INPUT_DIM, EMBEDDING_DIM = 4, 16, 8, 4


def _clusters() -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated Gaussian clusters; every batch of 16 holds all four classes."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(CLASSES, INPUT_DIM))
    labels = np.tile(np.arange(CLASSES), PER_CLASS)
    inputs = centres[labels] + rng.normal(size=(labels.size, INPUT_DIM))
    return inputs.astype("float32"), labels


def _encoder() -> keras.Model:
    inputs = keras.Input((INPUT_DIM,))
    outputs = keras.layers.UnitNormalization()(keras.layers.Dense(EMBEDDING_DIM)(inputs))
    return keras.Model(inputs, outputs)


def _loss(name: str) -> keras.losses.Loss:
    if name == "proxyanchor":
        return losses.get(name, num_classes=CLASSES, embedding_dim=EMBEDDING_DIM)
    if name == "xbm":
        return losses.get(name, loss="multisimilarity", embedding_dim=EMBEDDING_DIM, memory_size=32)
    return losses.get(name)


def _value(loss: keras.losses.Loss, labels: np.ndarray, embeddings: Any) -> float:
    """The loss over the whole data set as one batch (XBM: its wrapped loss, memory aside)."""
    measured = loss.loss if isinstance(loss, losses.XBMLoss) else loss
    return float(ops.convert_to_numpy(measured(labels, embeddings)))


@pytest.mark.parametrize("name", losses.names())
def test_fit_with_the_loss_lowers_it_on_clustered_data(name: str) -> None:
    keras.utils.set_random_seed(0)
    inputs, labels = _clusters()
    encoder = _encoder()
    loss = _loss(name)
    trainer = encoder
    if isinstance(loss, losses.ProxyAnchorLoss):
        trainer = keras.Sequential([encoder, loss.proxies_layer()])
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss, jit_compile=False)
    before = _value(loss, labels, encoder(inputs))
    history = trainer.fit(inputs, labels, batch_size=16, epochs=4, shuffle=False, verbose=0)
    after = _value(loss, labels, encoder(inputs))
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < before


def test_fit_trains_the_proxies_when_their_layer_is_in_the_model() -> None:
    keras.utils.set_random_seed(0)
    inputs, labels = _clusters()
    loss = losses.ProxyAnchorLoss(num_classes=CLASSES, embedding_dim=EMBEDDING_DIM)
    start = np.array(ops.convert_to_numpy(loss.proxies))
    trainer = keras.Sequential([_encoder(), loss.proxies_layer()])
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
    trainer.fit(inputs, labels, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(ops.convert_to_numpy(loss.proxies), start)


def test_fit_with_xbm_fills_the_memory_one_batch_per_step() -> None:
    """64 examples in batches of 16 for 2 epochs: 8 steps, 128 enqueued into 32 slots."""
    keras.utils.set_random_seed(0)
    inputs, labels = _clusters()
    loss = losses.XBMLoss("multisimilarity", embedding_dim=EMBEDDING_DIM, memory_size=32)
    encoder = _encoder()
    encoder.compile(optimizer="adam", loss=loss)
    encoder.fit(inputs, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert int(ops.convert_to_numpy(loss.steps)) == 8
    assert int(ops.convert_to_numpy(loss.position)) == 128 % 32
    assert ops.convert_to_numpy(loss.memory_filled).tolist() == [1] * 32
    stored = sorted(ops.convert_to_numpy(loss.memory_labels).tolist())
    assert stored == sorted(labels[-32:].tolist())
