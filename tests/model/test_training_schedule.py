"""`train` builds its optimizer with the warm-up + cosine schedule of its config."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras
import numpy as np
import pytest

from model.datasets import Dataset
from model.training import train
from simstream.errors import ModelError
from tests.model.conftest import FAST


class _RecordRates(keras.callbacks.Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        self.rates.append(float(np.asarray(optimizer.learning_rate)))


def test_training_warms_the_learning_rate_up_over_the_configured_epochs(digits: Dataset) -> None:
    recorder = _RecordRates()
    config = replace(FAST, epochs=2, steps_per_epoch=4, learning_rate=0.01, warmup_epochs=1)

    train(digits, config, callbacks=[recorder])

    # 4 warm-up steps: 0, 1/4, 2/4, 3/4 of the peak; then the decay over 4 steps starts at it.
    np.testing.assert_allclose(recorder.rates[:5], [0.0, 0.0025, 0.005, 0.0075, 0.01], rtol=1e-5)
    assert recorder.rates[5] < 0.01
    assert recorder.rates == sorted(recorder.rates[:5]) + sorted(recorder.rates[5:], reverse=True)


def test_a_negative_warmup_is_refused() -> None:
    with pytest.raises(ModelError, match="warmup_epochs"):
        replace(FAST, warmup_epochs=-1)
