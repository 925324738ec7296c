"""Multi-similarity loss: soft weighting of informative pairs mined per anchor."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = ["MultiSimilarityLoss", "multisimilarity_from_pairs", "multisimilarity_loss"]


def multisimilarity_from_pairs(
    distances: Any,
    positive_mask: Any,
    negative_mask: Any,
    *,
    alpha: float = 2.0,
    beta: float = 40.0,
    epsilon: float = 0.1,
    lmda: float = 0.5,
) -> Any:
    """Multi-similarity loss per anchor from a distance matrix and pair masks.

    With similarity `S = 1 - distance`, a negative pair is kept when
    `S_in + ε > min_p S_ip` and a positive pair when `S_ip - ε < max_n S_in`; then

        L_i = 1/α · log(1 + Σ_kept_p exp(-α (S_ip - λ)))
            + 1/β · log(1 + Σ_kept_n exp( β (S_in - λ))).

    Args:
        distances: `(B, N)` distances.
        positive_mask: boolean `(B, N)`.
        negative_mask: boolean `(B, N)`.
        alpha: scale of the positive term.
        beta: scale of the negative term.
        epsilon: margin of the pair mining.
        lmda: the similarity threshold λ.

    Returns:
        `(B,)` losses; 0 for anchors with no kept pair.
    """
    similarities = 1.0 - distances
    hardest_positive = mining.masked_min(similarities, positive_mask, fill=float("inf"))
    hardest_negative = mining.masked_max(similarities, negative_mask, fill=float("-inf"))
    kept_negatives = ops.logical_and(
        negative_mask, ops.greater(similarities + epsilon, ops.expand_dims(hardest_positive, 1))
    )
    kept_positives = ops.logical_and(
        positive_mask, ops.less(similarities - epsilon, ops.expand_dims(hardest_negative, 1))
    )
    positive_term = mining.masked_logsumexp(
        -alpha * (similarities - lmda), kept_positives, include_zero=True
    )
    negative_term = mining.masked_logsumexp(
        beta * (similarities - lmda), kept_negatives, include_zero=True
    )
    return positive_term / alpha + negative_term / beta


def multisimilarity_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    alpha: float = 2.0,
    beta: float = 40.0,
    epsilon: float = 0.1,
    lmda: float = 0.5,
) -> Any:
    """Multi-similarity loss of each anchor of a batch against the rest of the batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        alpha: scale of the positive term.
        beta: scale of the negative term.
        epsilon: margin of the pair mining.
        lmda: the similarity threshold λ.

    Returns:
        `(B,)` losses. See `multisimilarity_from_pairs` for the formula.
    """
    pairs = mining.pairwise(labels, embeddings, distance)
    return multisimilarity_from_pairs(*pairs, alpha=alpha, beta=beta, epsilon=epsilon, lmda=lmda)


@keras.saving.register_keras_serializable(package="simstream")
class MultiSimilarityLoss(PairBasedLoss):
    """Multi-similarity loss (`multisimilarity_loss`) as a Keras loss.

    `y_true` are class labels `(B,)` or `(B, 1)`, `y_pred` embeddings `(B, D)`.
    Defaults follow the authors' code: α=2, β=40, ε=0.1, λ=0.5.

    Args:
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        alpha: scale of the positive term, > 0.
        beta: scale of the negative term, > 0.
        epsilon: margin of the pair mining, ≥ 0.
        lmda: the similarity threshold λ.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: X. Wang, X. Han, W. Huang, D. Dong, M. R. Scott, "Multi-Similarity Loss
    with General Pair Weighting for Deep Metric Learning", CVPR 2019.
    """

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        *,
        alpha: float = 2.0,
        beta: float = 40.0,
        epsilon: float = 0.1,
        lmda: float = 0.5,
        name: str = "multisimilarity_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.alpha = mining.check_positive("alpha", alpha)
        self.beta = mining.check_positive("beta", beta)
        self.epsilon = mining.check_non_negative("epsilon", epsilon)
        self.lmda = float(lmda)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return multisimilarity_from_pairs(
            distances,
            positive_mask,
            negative_mask,
            alpha=self.alpha,
            beta=self.beta,
            epsilon=self.epsilon,
            lmda=self.lmda,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha, beta=self.beta, epsilon=self.epsilon, lmda=self.lmda)
        return config
