"""The math every pair-based loss shares: labels, pair masks, masked reductions, mining.

Conventions: a distance matrix is `(B, N)` between `B` anchors (queries) and `N`
keys. When the keys are the anchors themselves (`key_labels is None`), the
diagonal is neither a positive nor a negative pair. Masks are boolean tensors of
the matrix's shape. Masked reductions over a row with no selected entry return
0 (or the given fill), and callers zero the losses of such anchors.

Everything here is written with `keras.ops` and runs under any Keras backend.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from model import distances as distances_module
from model.distances import Distance
from simstream.errors import ModelError

__all__ = [
    "NEGATIVE_MINING",
    "POSITIVE_MINING",
    "check_choice",
    "check_non_negative",
    "check_positive",
    "flatten_labels",
    "masked_logsumexp",
    "masked_max",
    "masked_mean",
    "masked_min",
    "mine_negatives",
    "mine_positives",
    "pair_masks",
    "pairwise",
]

POSITIVE_MINING = ("hard", "easy")
NEGATIVE_MINING = ("hard", "semi-hard", "easy")

_NEG_INF = float("-inf")
_POS_INF = float("inf")


# --- argument checks ----------------------------------------------------------------


def check_non_negative(argument: str, value: float) -> float:
    """Returns `value` as a float, or raises `ModelError` when it is negative."""
    if not value >= 0:
        raise ModelError(
            f"Invalid value for argument `{argument}`. Expected {argument} ≥ 0. "
            f"Received: {argument}={value!r}"
        )
    return float(value)


def check_positive(argument: str, value: float) -> float:
    """Returns `value` as a float, or raises `ModelError` unless it is > 0."""
    if not value > 0:
        raise ModelError(
            f"Invalid value for argument `{argument}`. Expected {argument} > 0. "
            f"Received: {argument}={value!r}"
        )
    return float(value)


def check_choice(argument: str, value: str, choices: tuple[str, ...]) -> str:
    """Returns `value` normalised (`semi_hard` → `semi-hard`), or raises `ModelError`."""
    normalised = str(value).strip().lower().replace("_", "-")
    if normalised == "semihard":
        normalised = "semi-hard"
    if normalised not in choices:
        raise ModelError(
            f"Invalid value for argument `{argument}`. Expected one of {list(choices)}. "
            f"Received: {argument}={value!r}"
        )
    return normalised


# --- labels, masks and distances ----------------------------------------------------


def flatten_labels(labels: Any) -> Any:
    """Turns class labels of shape `(B,)` or `(B, 1)` into shape `(B,)`."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[1] == 1:
        return ops.reshape(labels, (-1,))
    if len(labels.shape) != 1:
        raise ModelError(
            "Invalid value for argument `labels`. Expected integer class labels of shape "
            f"(B,) or (B, 1). Received: labels with shape {tuple(labels.shape)}"
        )
    return labels


def pair_masks(labels: Any, key_labels: Any = None, key_valid: Any = None) -> tuple[Any, Any]:
    """Boolean masks of positive and negative pairs.

    Args:
        labels: anchor labels `(B,)`.
        key_labels: key labels `(N,)`; `None` means the keys are the anchors,
            and then an anchor is never paired with itself.
        key_valid: optional boolean `(N,)`; keys where it is false are in no pair
            (the empty slots of a memory bank).

    Returns:
        `(positive_mask, negative_mask)`, each boolean `(B, N)`.
    """
    labels = flatten_labels(labels)
    keys = labels if key_labels is None else flatten_labels(key_labels)
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(keys, 0))
    positive = same
    negative = ops.logical_not(same)
    if key_labels is None:
        size = ops.shape(labels)[0]
        positive = ops.logical_and(positive, ops.logical_not(ops.eye(size, dtype="bool")))
    if key_valid is not None:
        valid = ops.expand_dims(ops.cast(key_valid, "bool"), 0)
        positive = ops.logical_and(positive, valid)
        negative = ops.logical_and(negative, valid)
    return positive, negative


def pairwise(
    labels: Any,
    embeddings: Any,
    distance: str | dict[str, Any] | Distance = "cosine",
    key_labels: Any = None,
    key_embeddings: Any = None,
) -> tuple[Any, Any, Any]:
    """The distance matrix and pair masks of a batch (against itself or given keys).

    Args:
        labels: anchor labels `(B,)` or `(B, 1)`.
        embeddings: anchor embeddings `(B, D)`.
        distance: anything `model.distances.get` resolves.
        key_labels: key labels `(N,)`; `None` to use the anchors as keys.
        key_embeddings: key embeddings `(N, D)`; given with `key_labels`.

    Returns:
        `(distances, positive_mask, negative_mask)`, each `(B, N)`.
    """
    if (key_labels is None) != (key_embeddings is None):
        raise ModelError(
            "Invalid keys. Expected `key_labels` and `key_embeddings` both given or both "
            f"None. Received: key_labels is None={key_labels is None}, "
            f"key_embeddings is None={key_embeddings is None}"
        )
    resolved = distances_module.get(distance)
    keys = embeddings if key_embeddings is None else key_embeddings
    positive, negative = pair_masks(labels, key_labels)
    return resolved(embeddings, keys), positive, negative


# --- masked reductions --------------------------------------------------------------


def masked_max(values: Any, mask: Any, axis: int = -1, fill: float = 0.0) -> Any:
    """Max of `values` over entries where `mask` is true; `fill` for empty rows."""
    maxima = ops.max(ops.where(mask, values, _NEG_INF), axis=axis)
    return ops.where(ops.any(mask, axis=axis), maxima, fill)


def masked_min(values: Any, mask: Any, axis: int = -1, fill: float = 0.0) -> Any:
    """Min of `values` over entries where `mask` is true; `fill` for empty rows."""
    minima = ops.min(ops.where(mask, values, _POS_INF), axis=axis)
    return ops.where(ops.any(mask, axis=axis), minima, fill)


def masked_mean(values: Any, mask: Any, axis: int = -1) -> Any:
    """Mean of `values` over entries where `mask` is true; 0 for empty rows."""
    weights = ops.cast(mask, values.dtype)
    total = ops.sum(ops.where(mask, values, 0.0), axis=axis)
    return total / ops.maximum(ops.sum(weights, axis=axis), 1.0)


def masked_logsumexp(values: Any, mask: Any, axis: int = -1, *, include_zero: bool = False) -> Any:
    """`log Σ exp(values)` over entries where `mask` is true, computed stably.

    Args:
        values: a tensor.
        mask: a boolean tensor of the same shape.
        axis: the axis to reduce.
        include_zero: add a term `exp(0) = 1` inside the sum, giving
            `log(1 + Σ exp(values))` (the form of the multi-similarity, circle
            and proxy-anchor losses); empty rows then give `log 1 = 0` exactly.

    Returns:
        The reduced tensor; rows with no selected entry give 0.
    """
    shift = ops.max(ops.where(mask, values, _NEG_INF), axis=axis, keepdims=True)
    shift = ops.where(ops.isfinite(shift), shift, 0.0)
    if include_zero:
        shift = ops.maximum(shift, 0.0)
    shift = ops.stop_gradient(shift)
    # exp of a masked-out entry could overflow, and where() would turn its
    # infinite gradient into NaN: replace the argument, not just the result.
    exps = ops.exp(ops.where(mask, values - shift, _NEG_INF))
    total = ops.sum(exps, axis=axis)
    squeezed = ops.squeeze(shift, axis=axis)
    if include_zero:
        return ops.log(total + ops.exp(-squeezed)) + squeezed
    non_empty = ops.any(mask, axis=axis)
    return ops.where(non_empty, ops.log(ops.where(non_empty, total, 1.0)) + squeezed, 0.0)


# --- mining -------------------------------------------------------------------------


def mine_positives(distances: Any, positive_mask: Any, strategy: str = "hard") -> Any:
    """The distance from each anchor to its mined positive.

    Args:
        distances: `(B, N)` distances.
        positive_mask: boolean `(B, N)`.
        strategy: `"hard"` (the farthest positive) or `"easy"` (the closest).

    Returns:
        `(B,)` distances; 0 for anchors without a positive.
    """
    strategy = check_choice("positive_mining", strategy, POSITIVE_MINING)
    if strategy == "hard":
        return masked_max(distances, positive_mask)
    return masked_min(distances, positive_mask)


def mine_negatives(
    distances: Any,
    negative_mask: Any,
    strategy: str = "semi-hard",
    positive_distances: Any = None,
) -> Any:
    """The distance from each anchor to its mined negative.

    Args:
        distances: `(B, N)` distances.
        negative_mask: boolean `(B, N)`.
        strategy: `"hard"` (the closest negative), `"easy"` (the farthest) or
            `"semi-hard"` (the closest negative farther than the anchor's mined
            positive, as in FaceNet; the farthest negative when there is none).
        positive_distances: `(B,)`, needed by `"semi-hard"`.

    Returns:
        `(B,)` distances; 0 for anchors without a negative.
    """
    strategy = check_choice("negative_mining", strategy, NEGATIVE_MINING)
    if strategy == "hard":
        return masked_min(distances, negative_mask)
    easiest = masked_max(distances, negative_mask)
    if strategy == "easy":
        return easiest
    if positive_distances is None:
        raise ModelError(
            "Invalid arguments for semi-hard mining. Expected `positive_distances` of "
            "shape (B,). Received: positive_distances=None"
        )
    farther = ops.greater(distances, ops.expand_dims(positive_distances, 1))
    semi_hard_mask = ops.logical_and(negative_mask, farther)
    semi_hard = masked_min(distances, semi_hard_mask)
    return ops.where(ops.any(semi_hard_mask, axis=-1), semi_hard, easiest)


def margin_losses(
    gap: Any, positive_mask: Any, negative_mask: Any, margin: float, soft_margin: bool
) -> Any:
    """Per-anchor hinge ``relu(gap + margin)`` (or ``softplus(gap)``), zero for anchors
    without a positive or a negative in the batch."""
    losses = ops.softplus(gap) if soft_margin else ops.relu(gap + margin)
    valid = ops.logical_and(ops.any(positive_mask, axis=-1), ops.any(negative_mask, axis=-1))
    return ops.where(valid, losses, 0.0)
