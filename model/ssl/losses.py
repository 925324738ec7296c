"""Self-supervised losses of two views, in `keras.ops`, plus thin `keras.losses.Loss` classes.

The pure functions take the two views' projections ``z1``, ``z2`` (each
``(B, P)``; SimSiam also the predictions ``p1``, ``p2``) and return one loss per
example (batch-level losses repeat their value), so Keras' reduction applies.
The classes take ``y_pred``, the views concatenated on the last axis as the
contrastive model outputs them (``[z1, z2]``, SimSiam ``[p1, p2, z1, z2]``),
and ignore ``y_true``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
from keras import ops

from model.distances import l2_normalize
from model.losses import mining
from simstream.errors import ModelError

__all__ = [
    "BarlowTwinsLoss",
    "NTXentLoss",
    "SimSiamLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "get",
    "names",
    "nt_xent_loss",
    "simsiam_loss",
    "vicreg_loss",
]


def nt_xent_loss(z1: Any, z2: Any, *, temperature: float = 0.1) -> Any:
    """SimCLR's normalised temperature-scaled cross entropy, per example.

    The ``2B`` views are unit-normalised; view ``k``'s positive is the other
    view of its example, every other view is a negative:

        ℓ_k = -s_k,pos/τ + log Σ_{m ≠ k} exp(s_km/τ),   L_i = (ℓ_i + ℓ_{i+B}) / 2.

    Returns:
        `(B,)` losses.
    """
    z = l2_normalize(ops.concatenate([z1, z2], axis=0))
    size = ops.shape(z1)[0]
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    others = ops.logical_not(ops.eye(2 * size, dtype="bool"))
    log_denominator = mining.masked_logsumexp(logits, others)
    partner = ops.concatenate([z[size:], z[:size]], axis=0)
    positive = ops.sum(z * partner, axis=-1)
    losses = log_denominator - positive / temperature
    return (losses[:size] + losses[size:]) / 2.0


def barlow_twins_loss(z1: Any, z2: Any, *, redundancy_weight: float = 5e-3) -> Any:
    """Barlow Twins: the cross-correlation of the standardised views towards the identity.

        C = z̃1ᵀ z̃2 / B,   L = Σ_i (1 - C_ii)² + λ Σ_{i ≠ j} C_ij²

    with ``z̃`` standardised over the batch (population variance).

    Returns:
        `(B,)`, the batch's loss for every example.
    """
    size = ops.shape(z1)[0]
    c = ops.matmul(ops.transpose(_standardise(z1)), _standardise(z2)) / ops.cast(size, z1.dtype)
    diagonal = ops.diagonal(c)
    on = ops.sum(ops.square(1.0 - diagonal))
    off = ops.sum(ops.square(c)) - ops.sum(ops.square(diagonal))
    return ops.full((size,), on + redundancy_weight * off)


def vicreg_loss(
    z1: Any,
    z2: Any,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    epsilon: float = 1e-4,
) -> Any:
    """VICReg: invariance (MSE of the views), variance (std of each dimension ≥ 1)
    and covariance (off-diagonal covariance → 0), each view regularised alike.

        L = λ mean((z1 - z2)²) + μ Σ_v mean(relu(1 - √(Var z_v + ε)))
            + ν Σ_v Σ_{i ≠ j} Cov(z_v)_ij² / P

    with the sample (``B - 1``) covariance.

    Returns:
        `(B,)`, the batch's loss for every example.
    """
    size = ops.shape(z1)[0]
    invariance = ops.mean(ops.square(z1 - z2))
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        centred = z - ops.mean(z, axis=0, keepdims=True)
        variance += ops.mean(ops.relu(1.0 - ops.sqrt(ops.var(z, axis=0) + epsilon)))
        cov = ops.matmul(ops.transpose(centred), centred) / ops.cast(size - 1, z.dtype)
        off = ops.sum(ops.square(cov)) - ops.sum(ops.square(ops.diagonal(cov)))
        covariance += off / ops.cast(ops.shape(z)[1], z.dtype)
    total = (
        invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    )
    return ops.full((size,), total)


def simsiam_loss(p1: Any, p2: Any, z1: Any, z2: Any) -> Any:
    """SimSiam: negative cosine of each prediction with the other view's stopped projection.

        L_i = -cos(p1, sg(z2)) / 2 - cos(p2, sg(z1)) / 2

    Returns:
        `(B,)` losses.
    """
    z1, z2 = ops.stop_gradient(z1), ops.stop_gradient(z2)
    first = ops.sum(l2_normalize(p1) * l2_normalize(z2), axis=-1)
    second = ops.sum(l2_normalize(p2) * l2_normalize(z1), axis=-1)
    return -(first + second) / 2.0


def _standardise(z: Any) -> Any:
    centred = z - ops.mean(z, axis=0, keepdims=True)
    return centred / ops.sqrt(ops.var(z, axis=0, keepdims=True) + 1e-6)


class _ViewsLoss(keras.losses.Loss):
    """A loss of views concatenated on the last axis of ``y_pred``; ``y_true`` is ignored."""

    views: ClassVar[int] = 2

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.loss_of_views(*ops.split(y_pred, self.views, axis=-1))

    def loss_of_views(self, *views: Any) -> Any:
        """Per-example losses of the split views."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss_of_views")


@keras.saving.register_keras_serializable(package="simstream")
class NTXentLoss(_ViewsLoss):
    """SimCLR's NT-Xent loss (`nt_xent_loss`) of ``y_pred = [z1, z2]``.

    Args:
        temperature: the temperature τ, > 0.
        name: the loss name.
        reduction: Keras reduction of the per-example losses.
        dtype: Keras dtype policy of the computation.

    Paper: T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A Simple Framework for
    Contrastive Learning of Visual Representations", ICML 2020.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        name: str = "nt_xent_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = mining.check_positive("temperature", temperature)

    def loss_of_views(self, *views: Any) -> Any:
        return nt_xent_loss(*views, temperature=self.temperature)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="simstream")
class BarlowTwinsLoss(_ViewsLoss):
    """Barlow Twins loss (`barlow_twins_loss`) of ``y_pred = [z1, z2]``.

    Args:
        redundancy_weight: the weight λ of the off-diagonal terms, ≥ 0.
        name: the loss name.
        reduction: Keras reduction of the per-example losses.
        dtype: Keras dtype policy of the computation.

    Paper: J. Zbontar, L. Jing, I. Misra, Y. LeCun, S. Deny, "Barlow Twins:
    Self-Supervised Learning via Redundancy Reduction", ICML 2021.
    """

    def __init__(
        self,
        redundancy_weight: float = 5e-3,
        name: str = "barlow_twins_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.redundancy_weight = mining.check_non_negative("redundancy_weight", redundancy_weight)

    def loss_of_views(self, *views: Any) -> Any:
        return barlow_twins_loss(*views, redundancy_weight=self.redundancy_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "redundancy_weight": self.redundancy_weight}


@keras.saving.register_keras_serializable(package="simstream")
class VICRegLoss(_ViewsLoss):
    """VICReg loss (`vicreg_loss`) of ``y_pred = [z1, z2]``.

    Args:
        invariance_weight: λ, ≥ 0.
        variance_weight: μ, ≥ 0.
        covariance_weight: ν, ≥ 0.
        name: the loss name.
        reduction: Keras reduction of the per-example losses.
        dtype: Keras dtype policy of the computation.

    Paper: A. Bardes, J. Ponce, Y. LeCun, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR 2022.
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        name: str = "vicreg_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.invariance_weight = mining.check_non_negative("invariance_weight", invariance_weight)
        self.variance_weight = mining.check_non_negative("variance_weight", variance_weight)
        self.covariance_weight = mining.check_non_negative("covariance_weight", covariance_weight)

    def loss_of_views(self, *views: Any) -> Any:
        return vicreg_loss(
            *views,
            invariance_weight=self.invariance_weight,
            variance_weight=self.variance_weight,
            covariance_weight=self.covariance_weight,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "invariance_weight": self.invariance_weight,
            "variance_weight": self.variance_weight,
            "covariance_weight": self.covariance_weight,
        }


@keras.saving.register_keras_serializable(package="simstream")
class SimSiamLoss(_ViewsLoss):
    """SimSiam loss (`simsiam_loss`) of ``y_pred = [p1, p2, z1, z2]``.

    Args:
        name: the loss name.
        reduction: Keras reduction of the per-example losses.
        dtype: Keras dtype policy of the computation.

    Paper: X. Chen, K. He, "Exploring Simple Siamese Representation Learning",
    CVPR 2021.
    """

    views: ClassVar[int] = 4

    def __init__(
        self,
        name: str = "simsiam_loss",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def loss_of_views(self, *views: Any) -> Any:
        return simsiam_loss(*views)


_BY_NAME: dict[str, type[_ViewsLoss]] = {
    "simclr": NTXentLoss,
    "barlowtwins": BarlowTwinsLoss,
    "vicreg": VICRegLoss,
    "simsiam": SimSiamLoss,
}
_ALIASES = {"ntxent": "simclr", "barlow": "barlowtwins"}


def names() -> list[str]:
    """The self-supervised methods (``simclr``, ``barlowtwins``, ``vicreg``, ``simsiam``)."""
    return list(_BY_NAME)


def canonical(method: str) -> str:
    """The canonical method name (case, ``_``, ``-`` ignored; ``ntxent`` = ``simclr``)."""
    key = method.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in _BY_NAME:
        raise ModelError(
            f"Unknown self-supervised method. Expected one of {names()}. Received: {method!r}"
        )
    return key


def get(method: str, **kwargs: Any) -> keras.losses.Loss:
    """The loss of a self-supervised method, with constructor arguments."""
    cls = _BY_NAME[canonical(method)]
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ModelError(
            f"Invalid arguments for {cls.__name__}. Received: {kwargs!r} ({error})"
        ) from None
