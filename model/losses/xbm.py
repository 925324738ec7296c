"""Cross-batch memory: a pair-based loss also computed against embeddings of past batches."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss
from simstream.errors import ModelError

__all__ = ["XBMLoss"]


@keras.saving.register_keras_serializable(package="simstream")
class XBMLoss(keras.losses.Loss):
    """A pair-based loss over the batch plus the same loss against a memory queue.

    The memory is a ring buffer of the last `memory_size` embeddings and labels
    seen in training, stored without gradient (the paper's observation: a
    slowly drifting encoder keeps them close to current embeddings). Each call
    computes, per anchor,

        L_i = loss(batch vs batch)_i + weight · [step ≥ warmup_steps] · loss(batch vs memory)_i,

    then enqueues the batch, oldest entries out first. Memory slots not yet
    written take part in no pair. The memory is read before the batch is
    enqueued, so an anchor is never paired with its own copy.

    The memory is updated by assigning `keras.Variable`s inside the loss: this
    works in `model.fit` under the TensorFlow backend (the default). JAX's
    stateless training step does not carry loss variables, so under JAX use
    the wrapped loss's `loss_from_pairs` with a memory you keep yourself.

    Args:
        loss: the wrapped loss: a `PairBasedLoss` whose `supports_memory` is true,
            or anything `model.losses.get` resolves to one.
        embedding_dim: the embedding size D, ≥ 1.
        memory_size: the number of past embeddings kept, ≥ the batch size.
        distance: the distance of the wrapped loss, only when `loss` is a name.
        weight: the weight of the memory term, ≥ 0.
        warmup_steps: calls before the memory term is used (the paper starts
            the memory after the embeddings have stopped drifting fast).
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: X. Wang, H. Zhang, W. Huang, M. R. Scott, "Cross-Batch Memory for
    Embedding Learning", CVPR 2020.
    """

    def __init__(
        self,
        loss: PairBasedLoss | str | dict[str, Any] = "multisimilarity",
        *,
        embedding_dim: int,
        memory_size: int = 1024,
        distance: str | dict[str, Any] | Distance | None = None,
        weight: float = 1.0,
        warmup_steps: int = 0,
        name: str = "xbm_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        from model.losses import get as get_loss  # the package imports this module

        if distance is not None and not isinstance(loss, str):
            raise ModelError(
                "Invalid arguments for XBMLoss. Expected `distance` only with a loss name "
                "(a built loss or config carries its own distance). "
                f"Received: loss of type {type(loss).__name__}, distance={distance!r}"
            )
        inner = get_loss(loss) if distance is None else get_loss(loss, distance=distance)
        if not isinstance(inner, PairBasedLoss) or not inner.supports_memory:
            raise ModelError(
                "Invalid value for argument `loss`. Expected a pair-based loss that accepts "
                "memory keys (multisimilarity, triplet, circle, snn, supcon). "
                f"Received: loss={inner.name!r} of type {type(inner).__name__}"
            )
        for argument, value in (("embedding_dim", embedding_dim), ("memory_size", memory_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(
                    f"Invalid value for argument `{argument}`. Expected an integer "
                    f"{argument} ≥ 1. Received: {argument}={value!r}"
                )
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ModelError(
                "Invalid value for argument `warmup_steps`. Expected an integer "
                f"warmup_steps ≥ 0. Received: warmup_steps={warmup_steps!r}"
            )
        self.loss = inner
        self.embedding_dim = embedding_dim
        self.memory_size = memory_size
        self.weight = mining.check_non_negative("weight", weight)
        self.warmup_steps = warmup_steps
        self.memory_embeddings = keras.Variable(
            ops.zeros((memory_size, embedding_dim)),
            trainable=False,
            name=f"{name}_embeddings",
        )
        self.memory_labels = keras.Variable(
            ops.zeros((memory_size,), dtype="int32"),
            trainable=False,
            dtype="int32",
            name=f"{name}_labels",
        )
        self.memory_filled = keras.Variable(
            ops.zeros((memory_size,), dtype="int32"),
            trainable=False,
            dtype="int32",
            name=f"{name}_filled",
        )
        self.position = keras.Variable(0, trainable=False, dtype="int32", name=f"{name}_position")
        self.steps = keras.Variable(0, trainable=False, dtype="int32", name=f"{name}_steps")

    def reset(self) -> None:
        """Empties the memory and restarts the warm-up count."""
        self.memory_embeddings.assign(ops.zeros_like(self.memory_embeddings))
        self.memory_labels.assign(ops.zeros_like(self.memory_labels))
        self.memory_filled.assign(ops.zeros_like(self.memory_filled))
        self.position.assign(0)
        self.steps.assign(0)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-anchor losses `(B,)` of labels and embeddings; then enqueues the batch."""
        batch_size = y_pred.shape[0]
        if batch_size is not None and batch_size > self.memory_size:
            raise ModelError(
                "Invalid batch for the cross-batch memory. Expected batch size ≤ "
                f"memory_size={self.memory_size}. Received: batch size {batch_size}"
            )
        labels = ops.cast(mining.flatten_labels(y_true), "int32")
        batch_losses = self.loss.loss_from_pairs(
            *mining.pairwise(labels, y_pred, self.loss.distance)
        )
        memory = ops.cast(self.memory_embeddings.value, y_pred.dtype)
        positive_mask, negative_mask = mining.pair_masks(
            labels, self.memory_labels.value, ops.greater(self.memory_filled.value, 0)
        )
        memory_losses = self.loss.loss_from_pairs(
            self.loss.distance(y_pred, memory), positive_mask, negative_mask
        )
        active = ops.cast(ops.greater_equal(self.steps.value, self.warmup_steps), y_pred.dtype)
        losses = batch_losses + (self.weight * active) * memory_losses
        self._enqueue(labels, ops.stop_gradient(y_pred))
        return losses

    def _enqueue(self, labels: Any, embeddings: Any) -> None:
        """Writes the batch over the oldest memory slots."""
        count = ops.shape(labels)[0]
        slots = ops.mod(self.position.value + ops.arange(count, dtype="int32"), self.memory_size)
        slots = ops.expand_dims(slots, 1)
        self.memory_embeddings.assign(
            ops.scatter_update(
                self.memory_embeddings.value,
                slots,
                ops.cast(embeddings, self.memory_embeddings.dtype),
            )
        )
        self.memory_labels.assign(ops.scatter_update(self.memory_labels.value, slots, labels))
        self.memory_filled.assign(
            ops.scatter_update(self.memory_filled.value, slots, ops.ones_like(labels))
        )
        self.position.assign(ops.mod(self.position.value + count, self.memory_size))
        self.steps.assign(self.steps.value + 1)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            loss=keras.saving.serialize_keras_object(self.loss),
            embedding_dim=self.embedding_dim,
            memory_size=self.memory_size,
            weight=self.weight,
            warmup_steps=self.warmup_steps,
        )
        return config
