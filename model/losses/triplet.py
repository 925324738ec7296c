"""Triplet loss with batch mining of positives and negatives."""

from __future__ import annotations

from typing import Any

import keras

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = ["TripletLoss", "triplet_from_pairs", "triplet_loss"]


def triplet_from_pairs(
    distances: Any,
    positive_mask: Any,
    negative_mask: Any,
    *,
    positive_mining: str = "hard",
    negative_mining: str = "semi-hard",
    margin: float = 0.2,
    soft_margin: bool = False,
) -> Any:
    """Triplet loss per anchor from a distance matrix and pair masks.

    For each anchor, `d_ap` is the distance to its mined positive and `d_an` to
    its mined negative (see `mining.mine_positives` / `mining.mine_negatives`);
    the loss is `max(d_ap - d_an + margin, 0)`, or `log(1 + exp(d_ap - d_an))`
    with `soft_margin`.

    Args:
        distances: `(B, N)` distances.
        positive_mask: boolean `(B, N)`.
        negative_mask: boolean `(B, N)`.
        positive_mining: `"hard"` (farthest positive) or `"easy"` (closest).
        negative_mining: `"hard"` (closest negative), `"semi-hard"` or `"easy"`.
        margin: the hinge margin; ignored with `soft_margin`.
        soft_margin: use the softplus instead of the hinge.

    Returns:
        `(B,)` losses; 0 for anchors without a positive or without a negative.
    """
    positive = mining.mine_positives(distances, positive_mask, positive_mining)
    negative = mining.mine_negatives(distances, negative_mask, negative_mining, positive)
    gap = positive - negative
    return mining.margin_losses(gap, positive_mask, negative_mask, margin, soft_margin)


def triplet_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    positive_mining: str = "hard",
    negative_mining: str = "semi-hard",
    margin: float = 0.2,
    soft_margin: bool = False,
) -> Any:
    """Triplet loss of each anchor of a batch, positives and negatives mined in the batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves.
        positive_mining: `"hard"` or `"easy"`.
        negative_mining: `"hard"`, `"semi-hard"` or `"easy"`.
        margin: the hinge margin; ignored with `soft_margin`.
        soft_margin: use `log(1 + exp(d_ap - d_an))` instead of the hinge.

    Returns:
        `(B,)` losses. See `triplet_from_pairs`.
    """
    return triplet_from_pairs(
        *mining.pairwise(labels, embeddings, distance),
        positive_mining=positive_mining,
        negative_mining=negative_mining,
        margin=margin,
        soft_margin=soft_margin,
    )


@keras.saving.register_keras_serializable(package="simstream")
class TripletLoss(PairBasedLoss):
    """Triplet loss (`triplet_loss`) with in-batch mining, as a Keras loss.

    Semi-hard mining picks the closest negative farther than the positive
    (FaceNet), falling back to the farthest negative; hard positive plus hard
    negative mining is the "batch hard" loss, and `soft_margin` its soft-margin
    variant, of Hermans et al.

    Args:
        distance: anything `model.distances.get` resolves.
        positive_mining: `"hard"` or `"easy"`.
        negative_mining: `"hard"`, `"semi-hard"` or `"easy"`.
        margin: the hinge margin, ≥ 0; ignored with `soft_margin`.
        soft_margin: use `log(1 + exp(d_ap - d_an))` instead of the hinge.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding
    for Face Recognition and Clustering", CVPR 2015; A. Hermans, L. Beyer,
    B. Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
    arXiv:1703.07737, 2017.
    """

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        *,
        positive_mining: str = "hard",
        negative_mining: str = "semi-hard",
        margin: float = 0.2,
        soft_margin: bool = False,
        name: str = "triplet_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.positive_mining = mining.check_choice(
            "positive_mining", positive_mining, mining.POSITIVE_MINING
        )
        self.negative_mining = mining.check_choice(
            "negative_mining", negative_mining, mining.NEGATIVE_MINING
        )
        self.margin = mining.check_non_negative("margin", margin)
        self.soft_margin = bool(soft_margin)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return triplet_from_pairs(
            distances,
            positive_mask,
            negative_mask,
            positive_mining=self.positive_mining,
            negative_mining=self.negative_mining,
            margin=self.margin,
            soft_margin=self.soft_margin,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            positive_mining=self.positive_mining,
            negative_mining=self.negative_mining,
            margin=self.margin,
            soft_margin=self.soft_margin,
        )
        return config
