"""Supervised contrastive loss: every same-class sample is a positive of the anchor."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from model.distances import Distance
from model.losses import mining
from model.losses.pair_based import PairBasedLoss

__all__ = ["SupConLoss", "supcon_from_pairs", "supcon_loss"]


def supcon_from_pairs(
    distances: Any, positive_mask: Any, negative_mask: Any, *, temperature: float = 0.1
) -> Any:
    """Supervised contrastive loss per anchor from a distance matrix and pair masks.

    With similarity `s = 1 - distance` (the dot product of unit embeddings for
    the cosine distance) and `A(i)` every key but the anchor itself:

        L_i = -1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip / τ) / Σ_{a ∈ A(i)} exp(s_ia / τ) )
            = logsumexp_{a ∈ A(i)}(s_ia / τ) - mean_{p ∈ P(i)}(s_ip / τ).

    Args:
        distances: `(B, N)` distances.
        positive_mask: boolean `(B, N)`.
        negative_mask: boolean `(B, N)`.
        temperature: the temperature τ.

    Returns:
        `(B,)` losses; 0 for anchors without a positive.
    """
    logits = (1.0 - distances) / temperature
    candidates = ops.logical_or(positive_mask, negative_mask)
    losses = mining.masked_logsumexp(logits, candidates) - mining.masked_mean(logits, positive_mask)
    return ops.where(ops.any(positive_mask, axis=-1), losses, 0.0)


def supcon_loss(
    labels: Any,
    embeddings: Any,
    *,
    distance: str | dict[str, Any] | Distance = "cosine",
    temperature: float = 0.1,
) -> Any:
    """Supervised contrastive loss of each anchor of a batch.

    Args:
        labels: integer class labels `(B,)` or `(B, 1)`.
        embeddings: `(B, D)`.
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        temperature: the temperature τ.

    Returns:
        `(B,)` losses. See `supcon_from_pairs`.
    """
    return supcon_from_pairs(
        *mining.pairwise(labels, embeddings, distance), temperature=temperature
    )


@keras.saving.register_keras_serializable(package="simstream")
class SupConLoss(PairBasedLoss):
    """Supervised contrastive loss (`supcon_loss`, the paper's `L_out`) as a Keras loss.

    The batch holds one view per example; to use several augmented views, put
    them in the batch with the same label. The paper's `τ / τ_base` rescaling
    is left out (it is a constant factor).

    Args:
        distance: anything `model.distances.get` resolves; similarity is `1 - distance`.
        temperature: the temperature τ, > 0.
        name: the loss name.
        reduction: Keras reduction of the per-anchor losses.
        dtype: Keras dtype policy of the computation.

    Paper: P. Khosla, P. Teterwak, C. Wang, A. Sarna, Y. Tian, P. Isola,
    A. Maschinot, C. Liu, D. Krishnan, "Supervised Contrastive Learning", NeurIPS 2020.
    """

    def __init__(
        self,
        distance: str | dict[str, Any] | Distance = "cosine",
        *,
        temperature: float = 0.1,
        name: str = "supcon_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(distance=distance, name=name, reduction=reduction, dtype=dtype)
        self.temperature = mining.check_positive("temperature", temperature)

    def loss_from_pairs(self, distances: Any, positive_mask: Any, negative_mask: Any) -> Any:
        return supcon_from_pairs(
            distances, positive_mask, negative_mask, temperature=self.temperature
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config
