"""Soft nearest neighbour loss: how entangled the classes are under a temperature."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = [
    "SoftNearestNeighborLoss",
    "soft_nearest_neighbor_from_pairs",
    "soft_nearest_neighbor_loss",
]


def soft_nearest_neighbor_from_pairs(
    distances: Any, positive_mask: Any, negative_mask: Any, *, temperature: float = 1.0
) -> Any:
    """Soft nearest neighbour loss per anchor from a distance matrix and pair masks.

        L_i = -log( Σ_{j ∈ P(i)} exp(-d_ij / T) / Σ_{k ∈ P(i) ∪ N(i)} exp(-d_ik / T) ),

    the negative log-probability that a neighbour sampled with weights
    `exp(-d / T)` shares the anchor's class.

    Args:
        distances: `(B, N)` distances (squared Euclidean in the paper).
        positive_mask: boolean `(B, N)`.
        negative_mask: boolean `(B, N)`.
        temperature: the temperature T.

    Returns:
        `(B,)` losses; 0 for anchors without a positive.
    """
    logits = -distances / temperature
    candidates = ops.logical_or(positive_mask, negative_mask)
    losses = mining.masked_logsumexp(logits, candidates) - mining.masked_logsumexp(
        logits, positive_mask
    )
    return ops.where(ops.any(positive_mask, axis=-1), losses, 0.0)


def soft_nearest_neighbor_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "squared_euclidean",
    temperature: float = 1.0,
) -> Any:
    """Soft nearest neighbour loss of each anchor of a batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves.
        temperature: the temperature T.

    Returns:
        `(B,)` losses. See `soft_nearest_neighbor_from_pairs`.
    """
    return soft_nearest_neighbor_from_pairs(
        *mining.pairwise(labels, embeddings, distance), temperature=temperature
    )


@keras.saving.register_keras_serializable(package="simstream")
class SoftNearestNeighborLoss(PairBasedLoss):
    """Soft nearest neighbour loss (`soft_nearest_neighbor_loss`) as a Keras loss.

    Args:
        distance: anything `model.distances.get` resolves (squared Euclidean as in
            the paper by default).
        temperature: the temperature T, > 0.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: N. Frosst, N. Papernot, G. Hinton, "Analyzing and Improving
    Representations with the Soft Nearest Neighbor Loss", ICML 2019.
    """

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "squared_euclidean",
        *,
        temperature: float = 1.0,
        name: str = "soft_nearest_neighbor_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.temperature = mining.check_positive("temperature", temperature)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return soft_nearest_neighbor_from_pairs(
            distances, positive_mask, negative_mask, temperature=self.temperature
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config
