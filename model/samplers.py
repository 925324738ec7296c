"""Batches for metric learning, drawn from in-memory arrays as a `keras.utils.PyDataset`.

Pair-based losses (multi-similarity, contrastive, triplet…) learn only from the
positive pairs a batch contains, so batches are *class-balanced*: each holds
``classes_per_batch`` classes × ``examples_per_class`` examples of each.

Reproducibility: batch ``i`` of epoch ``e`` is a pure function of
``(seed, e, i)``, so a run gives the same batches whatever order Keras asks for
them in (it asks for a few twice to infer shapes) and however many workers fetch them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from simstream.errors import SamplerError
from simstream.log import get_logger

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""An augmentation hook: ``augment(x_batch, rng) -> x_batch`` (same shape).

It receives the batch's own generator, so augmented batches are reproducible too.
"""

log = get_logger("model.samplers")


class Sampler(keras.utils.PyDataset):  # type: ignore[misc]
    """Base class of samplers: a finite, seeded `PyDataset` of ``(x, y)`` batches.

    Subclasses implement `sample_indices`; this class turns indices into batches,
    applies the augmentation hook and counts epochs.

    Args:
        x: examples, first axis indexes them (already in model-input form).
        y: integer class labels, shape ``(n,)``.
        steps_per_epoch: batches per epoch.
        augment: optional hook applied to each ``x`` batch (see `Augment`).
        seed: seed of every random draw.
        **kwargs: `keras.utils.PyDataset` options (``workers``, ``use_multiprocessing``,
            ``max_queue_size``).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        steps_per_epoch: int,
        augment: Augment | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        x = np.asarray(x)
        y = np.asarray(y)
        if y.ndim != 1:
            raise SamplerError(f"Expected labels of shape (n,). Received: y.shape={y.shape}")
        if len(x) != len(y):
            raise SamplerError(
                f"Expected as many examples as labels. Received: len(x)={len(x)}, len(y)={len(y)}"
            )
        if len(y) == 0:
            raise SamplerError("Expected at least one example. Received: an empty dataset")
        if not np.issubdtype(y.dtype, np.integer):
            raise SamplerError(f"Expected integer labels. Received: y.dtype={y.dtype}")
        if steps_per_epoch < 1:
            raise SamplerError(
                f"Invalid value for argument `steps_per_epoch`. Expected ≥ 1. "
                f"Received: steps_per_epoch={steps_per_epoch}"
            )
        self.x = x
        self.y = y
        self.steps_per_epoch = int(steps_per_epoch)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.steps_per_epoch:
            raise IndexError(f"batch {index} out of range 0..{self.steps_per_epoch - 1}")
        rng = self.batch_rng(self.epoch, index)
        indices = self.sample_indices(rng)
        x_batch = self.x[indices]
        if self.augment is not None:
            x_batch = self.augment(x_batch, rng)
        return x_batch, self.y[indices]

    def batch_rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of batch ``index`` of ``epoch``."""
        return np.random.default_rng([self.seed, epoch, index])

    def sample_indices(self, rng: np.random.Generator) -> np.ndarray:
        """Indices into ``x`` / ``y`` of one batch."""
        raise NotImplementedError

    def on_epoch_end(self) -> None:
        self.epoch += 1


class ClassBalancedSampler(Sampler):
    """``classes_per_batch`` random classes × ``examples_per_class`` random examples each.

    Classes are drawn uniformly without replacement; examples of a class are
    drawn without replacement when the class has at least ``examples_per_class``
    of them, and *with replacement* otherwise (so a small class yields
    duplicates rather than a short batch). Batches therefore always hold
    ``classes_per_batch × examples_per_class`` examples, grouped by class.

    Args:
        x: examples, first axis indexes them.
        y: integer class labels, shape ``(n,)``.
        classes_per_batch: distinct classes in each batch (≥ 1, at most the
            number of classes in ``y``).
        examples_per_class: examples of each class in a batch (≥ 1; use ≥ 2 so
            batches hold positive pairs).
        steps_per_epoch: batches per epoch; by default enough to see about
            every example once (``len(y) // batch_size``, at least 1).
        augment: optional hook applied to each ``x`` batch.
        seed: seed of every random draw.
        **kwargs: `keras.utils.PyDataset` options.

    Raises:
        SamplerError: when a batch cannot be formed (fewer classes than
            ``classes_per_batch``, sizes below 1, mismatched or empty arrays).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes_per_batch: int,
        examples_per_class: int,
        steps_per_epoch: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if classes_per_batch < 1:
            raise SamplerError(
                f"Invalid value for argument `classes_per_batch`. Expected ≥ 1. "
                f"Received: classes_per_batch={classes_per_batch}"
            )
        if examples_per_class < 1:
            raise SamplerError(
                f"Invalid value for argument `examples_per_class`. Expected ≥ 1. "
                f"Received: examples_per_class={examples_per_class}"
            )
        batch_size = classes_per_batch * examples_per_class
        steps = steps_per_epoch if steps_per_epoch is not None else max(1, len(y) // batch_size)
        super().__init__(x, y, steps, augment=augment, seed=seed, **kwargs)
        self.classes, inverse, counts = np.unique(self.y, return_inverse=True, return_counts=True)
        if len(self.classes) < classes_per_batch:
            raise SamplerError(
                f"Cannot form a batch of {classes_per_batch} classes. Expected at least "
                f"classes_per_batch={classes_per_batch} distinct labels. "
                f"Received: {len(self.classes)} ({self.classes.tolist()[:20]})"
            )
        order = np.argsort(inverse, kind="stable")
        self._members = np.split(order, np.cumsum(counts)[:-1])
        self.classes_per_batch = int(classes_per_batch)
        self.examples_per_class = int(examples_per_class)
        small = int(np.sum(counts < examples_per_class))
        if small:
            log.info(
                "sampler.small_classes",
                classes=small,
                examples_per_class=examples_per_class,
                note="sampled with replacement",
            )

    @property
    def batch_size(self) -> int:
        """Examples per batch."""
        return self.classes_per_batch * self.examples_per_class

    def sample_indices(self, rng: np.random.Generator) -> np.ndarray:
        chosen = rng.choice(len(self.classes), size=self.classes_per_batch, replace=False)
        parts = []
        for c in chosen:
            members = self._members[c]
            replace = len(members) < self.examples_per_class
            parts.append(rng.choice(members, size=self.examples_per_class, replace=replace))
        return np.concatenate(parts)
