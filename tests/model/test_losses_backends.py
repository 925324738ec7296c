"""The losses are written with `keras.ops` only: they give the same values under JAX.

Keras fixes its backend at import, so the JAX side runs in a subprocess. The
test is skipped where JAX is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from keras import ops

from model import losses

SCRIPT = """
import json, numpy as np
from model import losses
rng = np.random.default_rng(0)
labels = rng.integers(0, 3, size=8)
embeddings = rng.normal(size=(8, 4)).astype("float32")
proxies = rng.normal(size=(3, 4)).astype("float32")
values = {name: np.asarray(losses.get(name).call(labels, embeddings)).tolist()
          for name in ["multisimilarity", "triplet", "pn", "circle", "snn", "supcon",
                       "liftedstruct", "mnr"]}
values["proxyanchor"] = np.asarray(losses.proxy_anchor_loss(labels, embeddings, proxies)).tolist()
print(json.dumps(values))
"""


def test_losses_give_the_same_values_under_jax_as_under_tensorflow() -> None:
    if os.environ.get("CI") != "true":  # jax comes with the dev extra; CI must have it
        pytest.importorskip("jax")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root)}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    jax_values = json.loads(completed.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=8)
    embeddings = rng.normal(size=(8, 4)).astype("float32")
    proxies = rng.normal(size=(3, 4)).astype("float32")
    for name, values in jax_values.items():
        if name == "proxyanchor":
            expected = losses.proxy_anchor_loss(labels, embeddings, proxies)
        else:
            expected = losses.get(name).call(labels, embeddings)
        np.testing.assert_allclose(values, ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-5)
