"""Augmentation hooks for samplers (see `model.samplers.Augment`): NumPy, seeded per batch."""

from __future__ import annotations

import numpy as np

from model.samplers import Augment
from simstream.errors import ModelError


def random_shift(max_shift: int) -> Augment:
    """Shift each image of a ``(B, H, W, C)`` batch by up to ``max_shift`` pixels each way.

    Vacated pixels are filled with zeros (the background of digit images). Each
    image gets its own offsets, drawn from the batch's generator.

    Args:
        max_shift: the largest shift in pixels along each axis (≥ 0).
    """
    if max_shift < 0:
        raise ModelError(
            f"Invalid value for argument `max_shift`. Expected ≥ 0. Received: {max_shift}"
        )

    def shift(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if max_shift == 0 or batch.ndim != 4:
            return batch
        size = 2 * max_shift
        padded = np.pad(batch, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
        offsets = rng.integers(0, size + 1, size=(len(batch), 2))
        height, width = batch.shape[1:3]
        out = np.empty_like(batch)
        for i, (dy, dx) in enumerate(offsets):
            out[i] = padded[i, dy : dy + height, dx : dx + width]
        return out

    return shift
