"""Image augmentation: in the training graph (`augmentation_layers`), or NumPy sampler hooks.

`augmentation_layers` is what `model.training.train` uses: Keras preprocessing
layers placed in front of the encoder inside the trained model, so augmentation
runs in the backend's compute threads (TensorFlow or JAX) instead of the Python
thread that feeds batches. The NumPy hooks (`random_shift`, `random_affine`,
see `model.samplers.Augment`) remain for samplers used on their own.
"""

from __future__ import annotations

import keras
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


def random_affine(
    max_shift: float = 0.0, max_rotation: float = 0.0, max_scale: float = 0.0
) -> Augment:
    """Randomly shift, rotate and scale each image of a ``(B, H, W, C)`` batch about its centre.

    Each image draws a shift in ``[-max_shift, max_shift]`` pixels per axis, an
    angle in ``[-max_rotation, max_rotation]`` degrees and a zoom factor in
    ``[1 - max_scale, 1 + max_scale]``; pixels are resampled bilinearly and the
    outside is filled with zeros.

    Args:
        max_shift: largest shift in pixels (≥ 0).
        max_rotation: largest rotation in degrees (≥ 0).
        max_scale: largest relative zoom (0 ≤ max_scale < 1).
    """
    if max_shift < 0 or max_rotation < 0 or not 0 <= max_scale < 1:
        raise ModelError(
            "Invalid augmentation. Expected max_shift ≥ 0, max_rotation ≥ 0 and "
            f"0 ≤ max_scale < 1. Received: max_shift={max_shift}, "
            f"max_rotation={max_rotation}, max_scale={max_scale}"
        )

    def affine(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if batch.ndim != 4:
            return batch
        from scipy.ndimage import affine_transform

        n, height, width, channels = batch.shape
        angles = np.deg2rad(rng.uniform(-max_rotation, max_rotation, size=(n,)))
        zooms = rng.uniform(1 - max_scale, 1 + max_scale, size=(n,))
        shifts = rng.uniform(-max_shift, max_shift, (n, 2))
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        out = np.empty_like(batch)
        for i in range(n):
            cos, sin = np.cos(angles[i]), np.sin(angles[i])
            # affine_transform maps output coordinates to input ones: the inverse map.
            inverse = np.array([[cos, sin], [-sin, cos]]) / zooms[i]
            offset = centre - inverse @ (centre + shifts[i])
            for c in range(channels):
                out[i, :, :, c] = affine_transform(
                    batch[i, :, :, c], inverse, offset=offset, order=1, cval=0.0
                )
        return out

    return affine


def augmentation_layers(
    max_shift: float = 0.0,
    max_rotation: float = 0.0,
    max_scale: float = 0.0,
    image_size: tuple[int, int] = (28, 28),
    seed: int = 0,
) -> keras.Sequential | None:
    """Random shift, rotation and zoom as Keras layers, active only while training.

    The same ranges as `random_affine`: a shift of up to ``max_shift`` pixels per
    axis, a rotation of up to ``max_rotation`` degrees and a zoom factor in
    ``[1 - max_scale, 1 + max_scale]``, bilinear, the outside filled with zeros.
    At inference the layers are the identity, so they can sit in the training
    graph in front of the encoder that is saved without them.

    Args:
        max_shift: largest shift in pixels (≥ 0).
        max_rotation: largest rotation in degrees (≥ 0).
        max_scale: largest relative zoom (0 ≤ max_scale < 1).
        image_size: ``(height, width)`` of the images (to turn pixels into fractions).
        seed: seed of the layers' random draws.

    Returns:
        The layers, or None when every range is 0.
    """
    random_affine(max_shift, max_rotation, max_scale)  # validates the ranges
    height, width = image_size
    fill = {"fill_mode": "constant", "fill_value": 0.0, "interpolation": "bilinear"}
    layers: list[keras.layers.Layer] = []
    if max_rotation:
        layers.append(keras.layers.RandomRotation(max_rotation / 360.0, seed=seed, **fill))
    if max_scale:
        layers.append(keras.layers.RandomZoom(max_scale, seed=seed + 1, **fill))
    if max_shift:
        layers.append(
            keras.layers.RandomTranslation(
                max_shift / height, max_shift / width, seed=seed + 2, **fill
            )
        )
    return keras.Sequential(layers, name="augmentation") if layers else None
