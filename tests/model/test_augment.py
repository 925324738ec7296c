from __future__ import annotations

import numpy as np
import pytest

from model.augment import random_shift
from simstream.errors import ModelError


def test_a_shift_moves_each_image_by_at_most_max_shift_and_fills_with_zeros() -> None:
    batch = np.zeros((50, 9, 9, 1), np.float32)
    batch[:, 4, 4, 0] = 1.0
    shifted = random_shift(2)(batch, np.random.default_rng(0))
    assert shifted.shape == batch.shape
    for image in shifted:
        (row,), (col,) = np.nonzero(image[..., 0])
        assert abs(row - 4) <= 2 and abs(col - 4) <= 2
    assert len({tuple(np.argwhere(im[..., 0])[0]) for im in shifted}) > 1


def test_a_zero_shift_returns_the_batch_unchanged() -> None:
    batch = np.random.default_rng(0).random((4, 5, 5, 1))
    assert random_shift(0)(batch, np.random.default_rng(0)) is batch


def test_a_negative_shift_is_refused() -> None:
    with pytest.raises(ModelError, match="max_shift"):
        random_shift(-1)
