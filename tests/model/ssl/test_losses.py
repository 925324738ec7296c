"""Self-supervised losses: NumPy references (TensorFlow and JAX), serialization, names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from model import ssl
from simstream.errors import ModelError


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float = 0.1) -> np.ndarray:
    z = _unit(np.concatenate([z1, z2]).astype("float64"))
    n = len(z1)
    per_view = []
    for k in range(2 * n):
        partner = (k + n) % (2 * n)
        others = [float(z[k] @ z[m]) / temperature for m in range(2 * n) if m != k]
        per_view.append(np.logaddexp.reduce(others) - float(z[k] @ z[partner]) / temperature)
    return np.array([(per_view[i] + per_view[i + n]) / 2 for i in range(n)])


def ref_barlow_twins(z1: np.ndarray, z2: np.ndarray, lmbda: float = 5e-3) -> np.ndarray:
    a, b = z1.astype("float64"), z2.astype("float64")
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-6)
    b = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-6)
    c = a.T @ b / len(a)
    total = sum(
        (1 - c[i, j]) ** 2 if i == j else lmbda * c[i, j] ** 2
        for i in range(c.shape[0])
        for j in range(c.shape[1])
    )
    return np.full(len(z1), total)


def ref_vicreg(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    a, b = z1.astype("float64"), z2.astype("float64")
    invariance = np.mean((a - b) ** 2)
    variance = sum(np.mean(np.maximum(0, 1 - np.sqrt(z.var(0) + 1e-4))) for z in (a, b))
    covariance = 0.0
    for z in (a, b):
        cov = np.cov(z, rowvar=False)
        covariance += (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / z.shape[1]
    return np.full(len(z1), 25 * invariance + 25 * variance + covariance)


def ref_simsiam(p1: np.ndarray, p2: np.ndarray, z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(_unit(a.astype("float64")) * _unit(b.astype("float64")), axis=1)

    return -(cos(p1, z2) + cos(p2, z1)) / 2


REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "simclr": ref_nt_xent,
    "barlowtwins": ref_barlow_twins,
    "vicreg": ref_vicreg,
    "simsiam": ref_simsiam,
}


def _views(method: str, seed: int) -> np.ndarray:
    views = 4 if method == "simsiam" else 2
    return np.random.default_rng(seed).normal(size=(6, 5 * views)).astype("float32")


@pytest.mark.parametrize("method", list(REFERENCES))
@pytest.mark.parametrize("seed", range(3))
def test_each_ssl_loss_agrees_with_its_numpy_reference(method: str, seed: int) -> None:
    y_pred = _views(method, seed)
    expected = REFERENCES[method](*np.split(y_pred, 4 if method == "simsiam" else 2, axis=1))

    result = ops.convert_to_numpy(ssl.get(method).call(None, y_pred))

    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-4)


SCRIPT = """
import json, numpy as np
from model import ssl
out = {}
for method in ["simclr", "barlowtwins", "vicreg", "simsiam"]:
    views = 4 if method == "simsiam" else 2
    y = np.random.default_rng(7).normal(size=(6, 5 * views)).astype("float32")
    out[method] = np.asarray(ssl.get(method).call(None, y)).tolist()
print(json.dumps(out))
"""


def test_ssl_losses_give_the_numpy_reference_values_under_jax() -> None:
    if os.environ.get("CI") != "true":
        pytest.importorskip("jax")
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root)}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    values = json.loads(completed.stdout.strip().splitlines()[-1])
    for method, reference in REFERENCES.items():
        y_pred = _views(method, 7)
        expected = reference(*np.split(y_pred, 4 if method == "simsiam" else 2, axis=1))
        np.testing.assert_allclose(values[method], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "loss",
    [
        ssl.NTXentLoss(temperature=0.3),
        ssl.BarlowTwinsLoss(redundancy_weight=0.01),
        ssl.VICRegLoss(invariance_weight=10.0, variance_weight=5.0, covariance_weight=0.5),
        ssl.SimSiamLoss(),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_each_ssl_loss_survives_keras_serialization(loss: keras.losses.Loss) -> None:
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    copy = keras.saving.deserialize_keras_object(serialized)
    assert type(copy) is type(loss)
    assert copy.get_config() == loss.get_config()


def test_an_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ModelError, match=r"Expected one of \['simclr', 'barlowtwins'"):
        ssl.get("byol")


def test_simsiam_sends_no_gradient_through_the_projections() -> None:
    import tensorflow as tf

    y_pred = tf.Variable(_views("simsiam", 0))
    with tf.GradientTape() as tape:
        value = ssl.SimSiamLoss()(np.zeros((6, 1), "float32"), y_pred)
    gradient = tape.gradient(value, y_pred).numpy()
    assert np.any(gradient[:, :10])
    assert not np.any(gradient[:, 10:])
