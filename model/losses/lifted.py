"""Lifted structured loss: every positive pair against every negative of either end."""

from __future__ import annotations

from typing import Any, ClassVar

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = ["LiftedStructLoss", "lifted_struct_from_pairs", "lifted_struct_loss"]


def lifted_struct_from_pairs(
    distances: Any, positive_mask: Any, negative_mask: Any, *, margin: float = 1.0
) -> Any:
    """Lifted structured loss per anchor from a square distance matrix and pair masks.

    For a positive pair ``(i, j)`` with ``N(i)`` the negatives of ``i``:

        J_ij = d_ij + log( Σ_{k ∈ N(i)} exp(α - d_ik) + Σ_{l ∈ N(j)} exp(α - d_jl) )

    and the anchor's loss is ``mean_{j ∈ P(i)} relu(J_ij)² / 2``. Averaged over
    the anchors this is the paper's ``1/(2|P|) Σ relu(J_ij)²`` with each
    anchor's pairs weighed alike.

    Args:
        distances: `(B, B)` distances between the anchors themselves.
        positive_mask: boolean `(B, B)`.
        negative_mask: boolean `(B, B)`.
        margin: the margin α.

    Returns:
        `(B,)` losses; 0 for anchors without a positive or a negative.
    """
    negative_terms = mining.masked_logsumexp(margin - distances, negative_mask)
    either = ops.logaddexp(ops.expand_dims(negative_terms, 1), ops.expand_dims(negative_terms, 0))
    pair_losses = ops.square(ops.relu(distances + either)) / 2.0
    losses = mining.masked_mean(pair_losses, positive_mask)
    valid = ops.logical_and(ops.any(positive_mask, axis=-1), ops.any(negative_mask, axis=-1))
    return ops.where(valid, losses, 0.0)


def lifted_struct_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "euclidean",
    margin: float = 1.0,
) -> Any:
    """Lifted structured loss of each anchor of a batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves.
        margin: the margin α.

    Returns:
        `(B,)` losses. See `lifted_struct_from_pairs`.
    """
    return lifted_struct_from_pairs(*mining.pairwise(labels, embeddings, distance), margin=margin)


@keras.saving.register_keras_serializable(package="simstream")
class LiftedStructLoss(PairBasedLoss):
    """Lifted structured loss (`lifted_struct_loss`) as a Keras loss.

    It needs the negatives of both ends of a pair, so it takes no memory of
    past batches (`XBMLoss` refuses it).

    Args:
        distance: anything `model.distances.get` resolves (the paper: Euclidean).
        margin: the margin α, ≥ 0.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: H. Oh Song, Y. Xiang, S. Jegelka, S. Savarese, "Deep Metric Learning
    via Lifted Structured Feature Embedding", CVPR 2016.
    """

    supports_memory: ClassVar[bool] = False

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "euclidean",
        *,
        margin: float = 1.0,
        name: str = "lifted_struct_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.margin = mining.check_non_negative("margin", margin)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return lifted_struct_from_pairs(distances, positive_mask, negative_mask, margin=self.margin)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(margin=self.margin)
        return config
