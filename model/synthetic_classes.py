"""Synthetic classes: every training class seen through a fixed transform becomes a new class.

A metric-learning encoder trained on a handful of classes learns just enough to
tell those apart, and the classes it never saw then land in the gaps between
them: few examples of a new class get outnumbered by the known classes' images
that stray toward it. Training on more classes teaches features that separate
shapes in general. The images at hand yield more classes for free: a digit
rotated by 90° or mirrored is no digit, so each such transform of each class is
a class of its own (the rotated classes of Omniglot's few-shot protocol). The
transforms are exact (pixel permutations), and the synthetic copies only ever
train: validation, evaluation and serving see the real classes.

Choose transforms that do not map a known class onto a class the model should
learn from examples later: rotating a 6 by 180° gives a 9, so on digits
``rot180`` and ``vflip`` would teach the model that class before it is added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from model.datasets import Dataset
from simstream.errors import ModelError

Transform = Callable[[np.ndarray], np.ndarray]
"""A transform of an image batch ``(N, H, W, C)``."""

TRANSFORMS: dict[str, Transform] = {
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot180": lambda x: np.rot90(x, 2, axes=(1, 2)),
    "rot270": lambda x: np.rot90(x, 3, axes=(1, 2)),
    "hflip": lambda x: x[:, :, ::-1],
    "vflip": lambda x: x[:, ::-1, :],
    "transpose": lambda x: np.swapaxes(x, 1, 2),
    "antitranspose": lambda x: np.rot90(np.swapaxes(x, 1, 2), 2, axes=(1, 2)),
}
"""Transform names, each a pixel permutation of the image: counter-clockwise rotations,
left–right and top–bottom mirrors, and mirrors about the main diagonal (top-left to
bottom-right) and the anti-diagonal (the eight symmetries of a square)."""

_TRANSPOSING = ("rot90", "rot270", "transpose", "antitranspose")


def check_transforms(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each known and none repeated.

    Raises:
        ModelError: an unknown or repeated name.
    """
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or len(set(names)) != len(names):
        raise ModelError(
            "Invalid value for argument `synthetic_classes`. Expected distinct names from "
            f"{sorted(TRANSFORMS)}. Received: {list(names)}"
        )
    return tuple(names)


def with_synthetic_classes(dataset: Dataset, transforms: Sequence[str]) -> Dataset:
    """``dataset`` and, per transform, a transformed copy of it under new labels.

    The copy by the ``i``-th transform (1-based) of an example of label ``c``
    gets label ``c + i × C`` (``C`` = ``dataset.num_classes``), named
    ``"<class name>/<transform>"``; the original examples come first, unchanged.

    Args:
        dataset: labelled images ``(N, H, W, C)``.
        transforms: names from `TRANSFORMS` (none: ``dataset`` itself).

    Raises:
        ModelError: unknown or repeated names, examples that are not images, or
            a 90° rotation of images that are not square.
    """
    names = check_transforms(transforms)
    if not names:
        return dataset
    if dataset.input_spec.kind != "image" or dataset.x.ndim != 4:
        raise ModelError(
            f"Cannot make synthetic classes of {dataset.input_spec.kind} data ({dataset.name}). "
            f"Expected images (N, H, W, C). Received: shape {dataset.x.shape}"
        )
    height, width = dataset.x.shape[1:3]
    if height != width and any(n in _TRANSPOSING for n in names):
        raise ModelError(
            f"Cannot rotate {height}×{width} images by 90° into the same shape. Expected "
            f"square images for {[n for n in names if n in _TRANSPOSING]}. "
            f"Received: {dataset.name}"
        )
    count = dataset.num_classes
    xs, ys = [dataset.x], [dataset.y]
    for i, name in enumerate(names, start=1):
        xs.append(TRANSFORMS[name](dataset.x))
        ys.append(dataset.y + i * count)
    class_names = dataset.class_names + tuple(
        f"{c}/{name}" for name in names for c in dataset.class_names
    )
    return replace(
        dataset,
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        class_names=class_names,
        name=f"{dataset.name} + synthetic classes {'/'.join(names)}",
    )
