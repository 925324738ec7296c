"""PN loss: a triplet loss whose negative distance is the smaller of anchor's and positive's."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.triplet import TripletLoss
from simstream.errors import ModelError

__all__ = ["PNLoss", "pn_from_pairs", "pn_loss"]


def _positive_indices(distances: Any, positive_mask: Any, strategy: str) -> Any:
    """Index of each anchor's mined positive (arbitrary for anchors without one)."""
    if strategy == "hard":
        return ops.argmax(ops.where(positive_mask, distances, float("-inf")), axis=-1)
    return ops.argmin(ops.where(positive_mask, distances, float("inf")), axis=-1)


def pn_from_pairs(
    distances: Any,
    positive_mask: Any,
    negative_mask: Any,
    *,
    positive_mining: str = "hard",
    negative_mining: str = "semi-hard",
    margin: float = 0.2,
    soft_margin: bool = False,
) -> Any:
    """PN loss per anchor from a square in-batch distance matrix and pair masks.

    For each anchor `a` with mined positive `p`, `d_an` is the distance from `a`
    to its mined negative and `d_pn` the distance from `p` to *its* mined
    negative (same class, so the same candidates); with `d = min(d_an, d_pn)`
    the loss is `max(d_ap - d + margin, 0)`, or `log(1 + exp(d_ap - d))` with
    `soft_margin`. Taking the closer of the two is the "anchor swap" of PN-Net.

    Args:
        distances: `(B, B)` distances among the batch (keys are the anchors).
        positive_mask: boolean `(B, B)`.
        negative_mask: boolean `(B, B)`.
        positive_mining: `"hard"` or `"easy"`.
        negative_mining: `"hard"`, `"semi-hard"` or `"easy"`.
        margin: the hinge margin; ignored with `soft_margin`.
        soft_margin: use the softplus instead of the hinge.

    Returns:
        `(B,)` losses; 0 for anchors without a positive or without a negative.

    Raises:
        ModelError: the distance matrix is not square.
    """
    rows, columns = distances.shape[0], distances.shape[1]
    if rows is not None and columns is not None and rows != columns:
        raise ModelError(
            "Invalid distances for the PN loss. Expected a square (B, B) in-batch matrix. "
            f"Received: shape {tuple(distances.shape)}"
        )
    positive_mining = mining.check_choice(
        "positive_mining", positive_mining, mining.POSITIVE_MINING
    )
    positive = mining.mine_positives(distances, positive_mask, positive_mining)
    anchor_negative = mining.mine_negatives(distances, negative_mask, negative_mining, positive)
    positive_rows = ops.take(
        distances, _positive_indices(distances, positive_mask, positive_mining), axis=0
    )
    positive_negative = mining.mine_negatives(
        positive_rows, negative_mask, negative_mining, positive
    )
    gap = positive - ops.minimum(anchor_negative, positive_negative)
    return mining.margin_losses(gap, positive_mask, negative_mask, margin, soft_margin)


def pn_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    positive_mining: str = "hard",
    negative_mining: str = "semi-hard",
    margin: float = 0.2,
    soft_margin: bool = False,
) -> Any:
    """PN loss of each anchor of a batch, mined in the batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves.
        positive_mining: `"hard"` or `"easy"`.
        negative_mining: `"hard"`, `"semi-hard"` or `"easy"`.
        margin: the hinge margin; ignored with `soft_margin`.
        soft_margin: use the softplus instead of the hinge.

    Returns:
        `(B,)` losses. See `pn_from_pairs`.
    """
    return pn_from_pairs(
        *mining.pairwise(labels, embeddings, distance),
        positive_mining=positive_mining,
        negative_mining=negative_mining,
        margin=margin,
        soft_margin=soft_margin,
    )


@keras.saving.register_keras_serializable(package="simstream")
class PNLoss(TripletLoss):
    """PN loss (`pn_loss`) as a Keras loss.

    It needs positive-to-negative distances, so it is computed over the batch
    only and cannot be wrapped by `XBMLoss` (`supports_memory` is false).

    Args:
        distance: anything `model.distances.get` resolves.
        positive_mining: `"hard"` or `"easy"`.
        negative_mining: `"hard"`, `"semi-hard"` or `"easy"`.
        margin: the hinge margin, ≥ 0; ignored with `soft_margin`.
        soft_margin: use the softplus instead of the hinge.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: V. Balntas, E. Johns, L. Tang, K. Mikolajczyk, "PN-Net: Conjoined
    Triple Deep Network for Learning Local Image Descriptors", arXiv:1601.05030, 2016.
    """

    supports_memory = False

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        *,
        positive_mining: str = "hard",
        negative_mining: str = "semi-hard",
        margin: float = 0.2,
        soft_margin: bool = False,
        name: str = "pn_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            distance,
            positive_mining=positive_mining,
            negative_mining=negative_mining,
            margin=margin,
            soft_margin=soft_margin,
            name=name,
            reduction=reduction,
            dtype=dtype,
        )

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return pn_from_pairs(
            distances,
            positive_mask,
            negative_mask,
            positive_mining=self.positive_mining,
            negative_mining=self.negative_mining,
            margin=self.margin,
            soft_margin=self.soft_margin,
        )
