"""Shared fixtures of the model tests: the digits dataset and one small trained encoder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from model.datasets import Dataset, load_digits
from model.training import TrainConfig, TrainResult, train

FAST = TrainConfig(
    encoder={"name": "cnn", "filters": [16, 32], "convs_per_block": 1},
    embedding_dim=16,
    epochs=2,
    steps_per_epoch=5,
    classes_per_batch=8,
    examples_per_class=4,
    validation_split=0.0,
    verbose=0,
)
"""A configuration that trains in a few seconds, for tests that need *a* model."""

MNIST_DIR = Path(
    os.environ.get(
        "SIMSTREAM_MNIST_DIR", Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
    )
)
"""The MNIST test set shared with this checkout (tests point the setting at it)."""


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="session")
def trained(digits: Dataset) -> TrainResult:
    return train(digits, FAST)
