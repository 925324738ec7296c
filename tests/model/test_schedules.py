from __future__ import annotations

import keras
import numpy as np
import pytest

from model.schedules import WarmupCosineDecay, warmup_cosine
from simstream.errors import ModelError


def _rate(schedule: WarmupCosineDecay, step: int) -> float:
    return float(np.asarray(schedule(step)))


def test_the_warmup_rises_linearly_from_zero_to_the_peak() -> None:
    schedule = WarmupCosineDecay(peak=0.1, decay_steps=100, warmup_steps=10, alpha=0.05)
    assert _rate(schedule, 0) == 0.0
    assert _rate(schedule, 5) == pytest.approx(0.05)  # 0.1 × 5 / 10
    assert _rate(schedule, 10) == pytest.approx(0.1)  # cos 0 = 1


def test_the_cosine_decays_to_alpha_times_the_peak_and_stays_there() -> None:
    schedule = WarmupCosineDecay(peak=0.1, decay_steps=100, warmup_steps=10, alpha=0.05)
    assert _rate(schedule, 60) == pytest.approx(0.1 * (1 + 0.05) / 2)  # cos(π/2) = 0
    assert _rate(schedule, 110) == pytest.approx(0.1 * 0.05)  # cos π = −1
    assert _rate(schedule, 500) == pytest.approx(0.1 * 0.05)


def test_without_warmup_it_equals_keras_cosine_decay() -> None:
    ours = WarmupCosineDecay(peak=0.01, decay_steps=40, alpha=0.05)
    theirs = keras.optimizers.schedules.CosineDecay(0.01, 40, alpha=0.05)
    for step in (0, 7, 20, 39, 40, 60):
        assert _rate(ours, step) == pytest.approx(float(np.asarray(theirs(step))), rel=1e-5)


def test_it_round_trips_through_keras_serialization_in_safe_mode() -> None:
    schedule = WarmupCosineDecay(peak=0.2, decay_steps=30, warmup_steps=5, alpha=0.1)
    config = keras.saving.serialize_keras_object(schedule)
    again = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert isinstance(again, WarmupCosineDecay)
    assert again.get_config() == schedule.get_config()
    assert _rate(again, 17) == pytest.approx(_rate(schedule, 17))


def test_a_run_shorter_than_its_warmup_still_decays_on_its_last_step() -> None:
    schedule = warmup_cosine(0.1, total_steps=4, warmup_steps=10)
    assert (schedule.warmup_steps, schedule.decay_steps) == (3, 1)


def test_an_invalid_schedule_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="decay_steps"):
        WarmupCosineDecay(peak=0.1, decay_steps=0)
