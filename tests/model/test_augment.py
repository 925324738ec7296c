from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.augment import augmentation_layers, random_affine, random_shift
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


def test_an_affine_augmentation_without_motion_is_the_identity() -> None:
    batch = np.random.default_rng(0).random((3, 7, 7, 2)).astype(np.float32)
    out = random_affine()(batch, np.random.default_rng(0))
    np.testing.assert_allclose(out, batch, atol=1e-6)


def test_a_rotation_moves_a_blob_around_the_centre_at_the_same_distance() -> None:
    batch = np.zeros((20, 11, 11, 1), np.float32)
    batch[:, 4:7, 7:10, 0] = 1.0  # a 3×3 blob centred 3 pixels right of the centre (5, 5)
    out = random_affine(max_rotation=90)(batch, np.random.default_rng(1))
    rows, cols = np.mgrid[:11, :11]
    weights = out[..., 0].reshape(20, -1)
    centres = (
        np.stack([weights @ rows.ravel(), weights @ cols.ravel()], 1) / weights.sum(1)[:, None]
    )
    np.testing.assert_allclose(np.hypot(*(centres - 5).T), 3, atol=0.3)
    assert np.ptp(centres[:, 0]) > 2  # the angles differ


def test_invalid_affine_ranges_are_refused() -> None:
    with pytest.raises(ModelError, match="max_scale"):
        random_affine(max_scale=1.0)
    with pytest.raises(ModelError, match="max_rotation"):
        random_affine(max_rotation=-1)


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[: images.shape[1], : images.shape[2]]
    weights = images[..., 0].reshape(len(images), -1)
    return np.stack([weights @ rows.ravel(), weights @ cols.ravel()], 1) / weights.sum(1)[:, None]


def test_graph_augmentation_moves_images_only_while_training() -> None:
    batch = np.zeros((32, 15, 15, 1), np.float32)
    batch[:, 6:9, 6:9, 0] = 1.0  # a blob on the centre (7, 7)
    layers = augmentation_layers(max_shift=3, seed=0)
    assert layers is not None
    np.testing.assert_allclose(np.asarray(layers(batch, training=False)), batch)
    moved = _centre_of_mass(np.asarray(layers(batch, training=True)))
    assert np.abs(moved - 7).max() <= 3 + 1e-4
    assert np.ptp(moved[:, 0]) > 1 and np.ptp(moved[:, 1]) > 1  # each image its own shift


def test_graph_rotation_keeps_a_blob_at_its_distance_from_the_centre() -> None:
    batch = np.zeros((20, 11, 11, 1), np.float32)
    batch[:, 4:7, 7:10, 0] = 1.0  # centred 3 pixels right of the centre (5, 5)
    layers = augmentation_layers(max_rotation=90, seed=1)
    assert layers is not None
    centres = _centre_of_mass(np.asarray(layers(batch, training=True)))
    np.testing.assert_allclose(np.hypot(*(centres - 5).T), 3, atol=0.3)
    assert np.ptp(centres[:, 0]) > 2


def test_no_ranges_means_no_augmentation_layers_and_bad_ranges_are_refused() -> None:
    assert augmentation_layers() is None
    with pytest.raises(ModelError, match="max_scale"):
        augmentation_layers(max_scale=1.5)


JAX_SCRIPT = """
import numpy as np
from model.augment import augmentation_layers
batch = np.zeros((16, 15, 15, 1), np.float32)
batch[:, 6:9, 6:9, 0] = 1.0
layer = augmentation_layers(max_shift=3, max_rotation=20, max_scale=0.2, seed=0)
out = np.asarray(layer(batch, training=True))
assert out.shape == batch.shape and not np.allclose(out, batch)
np.testing.assert_array_equal(np.asarray(layer(batch, training=False)), batch)
print("ok")
"""


def test_graph_augmentation_runs_under_jax_too() -> None:
    if os.environ.get("CI") != "true":
        pytest.importorskip("jax")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(root)}
    completed = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().endswith("ok")
