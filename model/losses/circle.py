"""Circle loss: pair similarities re-weighted by how far each is from its optimum."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = ["CircleLoss", "circle_from_pairs", "circle_loss"]


def circle_from_pairs(
    distances: Any,
    positive_mask: Any,
    negative_mask: Any,
    *,
    gamma: float = 80.0,
    margin: float = 0.4,
) -> Any:
    """Circle loss per anchor from a distance matrix and pair masks.

    With similarity `s = 1 - distance`, weights `α_p = [1 + m - s_p]₊` and
    `α_n = [s_n + m]₊` (constants: no gradient flows through them) and
    thresholds `Δ_p = 1 - m`, `Δ_n = m`:

        L = log(1 + Σ_n exp(γ α_n (s_n - Δ_n)) · Σ_p exp(-γ α_p (s_p - Δ_p))).

    Args:
        distances: `(B, N)` distances.
        positive_mask: boolean `(B, N)`.
        negative_mask: boolean `(B, N)`.
        gamma: the scale γ.
        margin: the relaxation margin m.

    Returns:
        `(B,)` losses; 0 for anchors without a positive or without a negative.
    """
    similarities = 1.0 - distances
    positive_weights = ops.stop_gradient(ops.relu(1.0 + margin - similarities))
    negative_weights = ops.stop_gradient(ops.relu(similarities + margin))
    positive_logits = -gamma * positive_weights * (similarities - (1.0 - margin))
    negative_logits = gamma * negative_weights * (similarities - margin)
    logits = mining.masked_logsumexp(positive_logits, positive_mask) + mining.masked_logsumexp(
        negative_logits, negative_mask
    )
    valid = ops.logical_and(ops.any(positive_mask, axis=-1), ops.any(negative_mask, axis=-1))
    return ops.where(valid, ops.softplus(logits), 0.0)


def circle_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    gamma: float = 80.0,
    margin: float = 0.4,
) -> Any:
    """Circle loss of each anchor of a batch against the rest of the batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        gamma: the scale γ.
        margin: the relaxation margin m.

    Returns:
        `(B,)` losses. See `circle_from_pairs`.
    """
    return circle_from_pairs(
        *mining.pairwise(labels, embeddings, distance), gamma=gamma, margin=margin
    )


@keras.saving.register_keras_serializable(package="simstream")
class CircleLoss(PairBasedLoss):
    """Circle loss (`circle_loss`), pair-wise form, as a Keras loss.

    Args:
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        gamma: the scale γ, > 0 (80 in the paper's fine-grained experiments).
        margin: the relaxation margin m, ≥ 0.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: Y. Sun, C. Cheng, Y. Zhang, C. Zhang, L. Zheng, Z. Wang, Y. Wei,
    "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020.
    """

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        *,
        gamma: float = 80.0,
        margin: float = 0.4,
        name: str = "circle_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.gamma = mining.check_positive("gamma", gamma)
        self.margin = mining.check_non_negative("margin", margin)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return circle_from_pairs(
            distances, positive_mask, negative_mask, gamma=self.gamma, margin=self.margin
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(gamma=self.gamma, margin=self.margin)
        return config
