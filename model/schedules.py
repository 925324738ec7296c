"""`WarmupCosineDecay`: a linear warm-up to the peak learning rate, then a cosine decay.

With ``peak`` the learning rate, ``W`` the warm-up steps, ``D`` the decay steps
and ``alpha`` the final share of ``peak``, the rate at step ``s`` is::

    s < W:          peak × s / W
    W ≤ s ≤ W + D:  peak × (alpha + (1 − alpha) × (1 + cos(π (s − W) / D)) / 2)
    s > W + D:      peak × alpha

So it is 0 at step 0, ``peak`` at the end of the warm-up (the cosine starts at
``cos 0 = 1``), ``peak × (1 + alpha) / 2`` half-way through the decay, and
``peak × alpha`` at its end (``cos π = −1``). Without a warm-up (``W = 0``) it
equals Keras' ``CosineDecay(peak, D, alpha)``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from simstream.errors import ModelError


@keras.saving.register_keras_serializable(package="simstream")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """Linear warm-up then cosine decay (see the module docstring).

    Args:
        peak: the learning rate at the end of the warm-up (> 0).
        decay_steps: steps of the cosine decay after the warm-up (≥ 1).
        warmup_steps: steps of the linear warm-up (≥ 0).
        alpha: the final rate as a share of ``peak`` (0..1).
    """

    def __init__(
        self, peak: float, decay_steps: int, warmup_steps: int = 0, alpha: float = 0.05
    ) -> None:
        if peak <= 0 or decay_steps < 1 or warmup_steps < 0 or not 0 <= alpha <= 1:
            raise ModelError(
                "Invalid learning-rate schedule. Expected peak > 0, decay_steps ≥ 1, "
                f"warmup_steps ≥ 0 and 0 ≤ alpha ≤ 1. Received: peak={peak}, "
                f"decay_steps={decay_steps}, warmup_steps={warmup_steps}, alpha={alpha}"
            )
        self.peak = float(peak)
        self.decay_steps = int(decay_steps)
        self.warmup_steps = int(warmup_steps)
        self.alpha = float(alpha)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        rising = self.peak * step / warmup
        progress = ops.clip((step - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.peak * (self.alpha + (1.0 - self.alpha) * cosine)
        return ops.where(step < self.warmup_steps, rising, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "alpha": self.alpha,
        }


def warmup_cosine(
    peak: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.05
) -> WarmupCosineDecay:
    """The schedule of a run of ``total_steps``: a warm-up of at most all of them, decay after."""
    total_steps = max(1, int(total_steps))
    warmup_steps = min(max(0, int(warmup_steps)), total_steps - 1)
    return WarmupCosineDecay(peak, total_steps - warmup_steps, warmup_steps, alpha)
