"""Image augmentation: in the training graph (`augmentation_layers`), or NumPy sampler hooks.

`augmentation_layers` is what `model.training.train` uses: a `RandomAffine`
layer placed in front of the encoder inside the trained model, so augmentation
runs in the backend's compute threads (TensorFlow or JAX) instead of the Python
thread that feeds batches. The NumPy hooks (`random_shift`, `random_affine`,
see `model.samplers.Augment`) remain for samplers used on their own.
"""

from __future__ import annotations

from typing import Any

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


@keras.saving.register_keras_serializable(package="simstream")
class RandomAffine(keras.layers.Layer):  # type: ignore[misc]
    """Random shift, rotation and zoom of ``(B, H, W, C)`` images in one bilinear resampling.

    The same draws as `random_affine`, in `keras.ops` (TensorFlow and JAX):
    each image gets its own angle, zoom and shift about the image centre, the
    outside is filled with zeros. One resampling instead of one per
    transformation (as chaining `keras.layers.RandomRotation`, `RandomZoom`
    and `RandomTranslation` would do) keeps strokes sharp and costs a third.
    The identity when not training.

    Args:
        max_shift: largest shift in pixels (≥ 0).
        max_rotation: largest rotation in degrees (≥ 0).
        max_scale: largest relative zoom (0 ≤ max_scale < 1).
        seed: seed of the draws.
    """

    def __init__(
        self,
        max_shift: float = 0.0,
        max_rotation: float = 0.0,
        max_scale: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        random_affine(max_shift, max_rotation, max_scale)  # validates the ranges
        self.max_shift = float(max_shift)
        self.max_rotation = float(max_rotation)
        self.max_scale = float(max_scale)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        ops = keras.ops
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]

        def uniform(limit: float) -> Any:
            return keras.random.uniform(
                (batch,), -limit, limit, dtype="float32", seed=self.seed_generator
            )

        angle = uniform(self.max_rotation * np.pi / 180.0)
        zoom = 1.0 + uniform(self.max_scale)
        shift_x, shift_y = uniform(self.max_shift), uniform(self.max_shift)
        centre_x = (ops.cast(width, "float32") - 1.0) / 2.0
        centre_y = (ops.cast(height, "float32") - 1.0) / 2.0
        # Output pixel p maps to input A·p + b, A = R(angle) / zoom, b = c − A·(c + shift).
        cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
        a0, a1, b0, b1 = cos, sin, -sin, cos
        a2 = centre_x - (a0 * (centre_x + shift_x) + a1 * (centre_y + shift_y))
        b2 = centre_y - (b0 * (centre_x + shift_x) + b1 * (centre_y + shift_y))
        zeros = ops.zeros_like(angle)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0.0
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "max_shift": self.max_shift,
            "max_rotation": self.max_rotation,
            "max_scale": self.max_scale,
            "seed": self.seed,
        }


def augmentation_layers(
    max_shift: float = 0.0,
    max_rotation: float = 0.0,
    max_scale: float = 0.0,
    seed: int = 0,
) -> RandomAffine | None:
    """The in-graph augmentation of `model.training.train`, or None when every range is 0.

    A `RandomAffine` layer placed in front of the encoder inside the trained
    model: it runs in the backend's compute threads, and the saved encoder does
    not contain it.
    """
    if not (max_shift or max_rotation or max_scale):
        random_affine(max_shift, max_rotation, max_scale)  # still refuses bad ranges
        return None
    return RandomAffine(max_shift, max_rotation, max_scale, seed=seed, name="augmentation")
