"""`PairBasedLoss`: the base of every loss computed from a distance matrix and pair masks."""

from __future__ import annotations

from typing import Any, ClassVar

import keras

from model import distances as distances_module
from model.distances import Distance
from model.losses import mining

__all__ = ["PairBasedLoss"]


class PairBasedLoss(keras.losses.Loss):
    """A loss over the pairs of a batch: `y_true` are class labels, `y_pred` embeddings.

    `call` computes the `(B, B)` distance matrix and the positive / negative
    masks, then hands them to `loss_from_pairs`, which each subclass implements
    with its pure function. Splitting it this way lets `XBMLoss` feed the same
    loss with pairs against a memory of past batches.

    Attributes:
        distance: the resolved `Distance`.
        supports_memory: whether `loss_from_pairs` accepts keys that are not the
            anchors (a `(B, N)` matrix); false for losses that also need
            key-to-key distances.
    """

    supports_memory: ClassVar[bool] = True

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        name: str | None = None,
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.distance: Distance = distances_module.get(distance)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-anchor losses `(B,)` of labels `y_true` and embeddings `y_pred`."""
        pairwise_distances, positive_mask, negative_mask = mining.pairwise(
            y_true, y_pred, self.distance
        )
        return self.loss_from_pairs(pairwise_distances, positive_mask, negative_mask)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        """Per-anchor losses `(B,)` from a `(B, N)` distance matrix and pair masks."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss_from_pairs")

    def get_config(self) -> dict[str, Any]:
        """Keras' loss config plus the distance (its name when built in)."""
        config: dict[str, Any] = super().get_config()
        config["distance"] = distances_module.serialize(self.distance)
        return config
