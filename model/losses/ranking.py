"""Multiple-negatives ranking loss: an in-batch softmax over each positive and the negatives."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = [
    "MultipleNegativesRankingLoss",
    "multiple_negatives_ranking_from_pairs",
    "multiple_negatives_ranking_loss",
]


def multiple_negatives_ranking_from_pairs(
    distances: Any, positive_mask: Any, negative_mask: Any, *, temperature: float = 0.05
) -> Any:
    """Multiple-negatives ranking loss per anchor from a distance matrix and pair masks.

    With similarity `s = 1 - distance` and `N(i)` the anchor's negatives, each
    positive `p` is a softmax classification among itself and the negatives:

        L_i = mean_{p ∈ P(i)} [ log( exp(s_ip/τ) + Σ_{n ∈ N(i)} exp(s_in/τ) ) - s_ip/τ ].

    With a batch of pairs (two examples per label) each anchor has one
    positive, and averaging over both ends of every pair gives CLIP's symmetric
    in-batch softmax. Unlike supervised contrastive loss, other positives are
    not in the denominator.

    Args:
        distances: `(B, N)` distances.
        positive_mask: boolean `(B, N)`.
        negative_mask: boolean `(B, N)`.
        temperature: the temperature τ (the inverse of the usual scale of 20).

    Returns:
        `(B,)` losses; 0 for anchors without a positive.
    """
    logits = (1.0 - distances) / temperature
    negatives = mining.masked_logsumexp(logits, negative_mask)
    has_negative = ops.expand_dims(ops.any(negative_mask, axis=-1), 1)
    denominators = ops.where(
        has_negative, ops.logaddexp(logits, ops.expand_dims(negatives, 1)), logits
    )
    losses = mining.masked_mean(denominators - logits, positive_mask)
    return ops.where(ops.any(positive_mask, axis=-1), losses, 0.0)


def multiple_negatives_ranking_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    temperature: float = 0.05,
) -> Any:
    """Multiple-negatives ranking loss of each anchor of a batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)` (pairs share a label).
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        temperature: the temperature τ.

    Returns:
        `(B,)` losses. See `multiple_negatives_ranking_from_pairs`.
    """
    return multiple_negatives_ranking_from_pairs(
        *mining.pairwise(labels, embeddings, distance), temperature=temperature
    )


@keras.saving.register_keras_serializable(package="simstream")
class MultipleNegativesRankingLoss(PairBasedLoss):
    """Multiple-negatives ranking loss (`multiple_negatives_ranking_loss`) as a Keras loss.

    Train it on batches of pairs (``examples_per_class=2``) for the CLIP-style
    in-batch softmax; more examples per class average over each positive.

    Args:
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        temperature: the temperature τ, > 0.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: M. Henderson, R. Al-Rfou, B. Strope, Y. Sung, L. Lukács, R. Guo,
    S. Kumar, B. Miklos, R. Kurzweil, "Efficient Natural Language Response
    Suggestion for Smart Reply", arXiv:1705.00652, 2017.
    """

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        *,
        temperature: float = 0.05,
        name: str = "multiple_negatives_ranking_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.temperature = mining.check_positive("temperature", temperature)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return multiple_negatives_ranking_from_pairs(
            distances, positive_mask, negative_mask, temperature=self.temperature
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config
