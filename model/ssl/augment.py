"""Two-view augmentation for self-supervised training, as in-graph Keras layers.

The contrastive model calls the same augmenter twice on a batch; each call
draws fresh randomness, giving two views of every example. The layers are
active only in training (``model.fit``), so the trained encoder never sees them.

- images: random translation (±12 % of the side), rotation (±8 % of a turn),
  zoom (±15 %), contrast (±30 %) and Gaussian noise (σ 0.05 of the input scale);
- vectors: Gaussian noise (σ 0.1) and random dropout of 10 % of the features.
"""

from __future__ import annotations

import keras

from model.inputs import InputSpec


def augmenter(spec: InputSpec, seed: int | None = None) -> keras.Sequential:
    """The augmentation pipeline for inputs of ``spec`` (model inputs, after the spec).

    Args:
        spec: the encoder's input spec (its ``kind`` and ``scale`` choose the layers).
        seed: seeds the random layers.
    """
    layers = keras.layers
    if spec.kind == "image":
        ends = sorted((float(spec.offset), 255.0 * float(spec.scale) + float(spec.offset)))
        noise = 0.05 * (ends[1] - ends[0])
        return keras.Sequential(
            [
                layers.RandomTranslation(0.12, 0.12, fill_mode="constant", seed=seed),
                layers.RandomRotation(0.08, fill_mode="constant", seed=seed),
                layers.RandomZoom(0.15, fill_mode="constant", seed=seed),
                layers.RandomContrast(0.3, value_range=tuple(ends), seed=seed),
                layers.GaussianNoise(noise, seed=seed),
            ],
            name="ssl_augment",
        )
    return keras.Sequential(
        [layers.GaussianNoise(0.1, seed=seed), layers.Dropout(0.1, seed=seed)],
        name="ssl_augment",
    )
