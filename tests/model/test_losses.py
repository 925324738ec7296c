"""Metric-learning losses: hand-derived values, NumPy references, gradients, arguments.

The NumPy references at the top follow each paper's formula literally, in
float64, one anchor at a time; they share no code with `model.losses`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from model import losses
from model.losses import mining
from simstream.errors import ModelError

# --- NumPy references -------------------------------------------------------------

Pairs = tuple[np.ndarray, list[list[int]], list[list[int]]]


def ref_distance(name: str, q: np.ndarray, k: np.ndarray) -> float:
    """One distance between two float64 vectors."""
    if name == "cosine":
        return 1.0 - float(q @ k) / float(np.linalg.norm(q) * np.linalg.norm(k))
    if name == "euclidean":
        return math.sqrt(float(np.sum((q - k) ** 2)))
    if name == "squared_euclidean":
        return float(np.sum((q - k) ** 2))
    if name == "manhattan":
        return float(np.sum(np.abs(q - k)))
    if name == "inner_product":
        return 1.0 - float(q @ k)
    raise ValueError(name)


def ref_pairs(
    labels: Sequence[int] | np.ndarray,
    embeddings: np.ndarray,
    name: str,
    key_labels: Sequence[int] | np.ndarray | None = None,
    key_embeddings: np.ndarray | None = None,
) -> Pairs:
    """Distance matrix plus, per anchor, the indices of its positive and negative keys."""
    same_set = key_labels is None
    keys = embeddings if key_embeddings is None else key_embeddings
    key_classes = list(labels) if key_labels is None else list(key_labels)
    matrix = np.array(
        [
            [ref_distance(name, q, k) for k in keys.astype("float64")]
            for q in embeddings.astype("float64")
        ]
    )
    positives: list[list[int]] = []
    negatives: list[list[int]] = []
    for i, label in enumerate(labels):
        positives.append(
            [
                j
                for j, other in enumerate(key_classes)
                if other == label and not (same_set and i == j)
            ]
        )
        negatives.append([j for j, other in enumerate(key_classes) if other != label])
    return matrix, positives, negatives


def _log1p_sum_exp(values: list[float]) -> float:
    """log(1 + Σ exp(v)), stable."""
    return float(np.logaddexp.reduce([0.0, *values]))


def _logsumexp(values: list[float]) -> float:
    return float(np.logaddexp.reduce(values))


def _mine_negative(row: np.ndarray, candidates: list[int], strategy: str, positive: float) -> float:
    values = [row[j] for j in candidates]
    if strategy == "hard":
        return min(values)
    if strategy == "easy":
        return max(values)
    farther = [v for v in values if v > positive]
    return min(farther) if farther else max(values)


def ref_triplet(
    pairs_: Pairs,
    positive_mining: str = "hard",
    negative_mining: str = "semi-hard",
    margin: float = 0.2,
    soft_margin: bool = False,
) -> np.ndarray:
    matrix, positives, negatives = pairs_
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos or not neg:
            losses.append(0.0)
            continue
        pos_values = [matrix[i, j] for j in pos]
        d_ap = max(pos_values) if positive_mining == "hard" else min(pos_values)
        d_an = _mine_negative(matrix[i], neg, negative_mining, d_ap)
        gap = d_ap - d_an
        losses.append(math.log1p(math.exp(gap)) if soft_margin else max(gap + margin, 0.0))
    return np.array(losses)


def ref_pn(
    pairs_: Pairs,
    positive_mining: str = "hard",
    negative_mining: str = "semi-hard",
    margin: float = 0.2,
    soft_margin: bool = False,
) -> np.ndarray:
    matrix, positives, negatives = pairs_
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos or not neg:
            losses.append(0.0)
            continue
        chosen = max(pos, key=lambda j: matrix[i, j])
        if positive_mining == "easy":
            chosen = min(pos, key=lambda j: matrix[i, j])
        d_ap = matrix[i, chosen]
        d_an = _mine_negative(matrix[i], neg, negative_mining, d_ap)
        d_pn = _mine_negative(matrix[chosen], neg, negative_mining, d_ap)
        gap = d_ap - min(d_an, d_pn)
        losses.append(math.log1p(math.exp(gap)) if soft_margin else max(gap + margin, 0.0))
    return np.array(losses)


def ref_multisimilarity(
    pairs_: Pairs, alpha: float = 2.0, beta: float = 40.0, epsilon: float = 0.1, lmda: float = 0.5
) -> np.ndarray:
    matrix, positives, negatives = pairs_
    similarity = 1.0 - matrix
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        pos_s = [similarity[i, j] for j in pos]
        neg_s = [similarity[i, j] for j in neg]
        kept_pos = [s for s in pos_s if neg_s and s - epsilon < max(neg_s)]
        kept_neg = [s for s in neg_s if pos_s and s + epsilon > min(pos_s)]
        losses.append(
            _log1p_sum_exp([-alpha * (s - lmda) for s in kept_pos]) / alpha
            + _log1p_sum_exp([beta * (s - lmda) for s in kept_neg]) / beta
        )
    return np.array(losses)


def ref_circle(pairs_: Pairs, gamma: float = 80.0, margin: float = 0.4) -> np.ndarray:
    matrix, positives, negatives = pairs_
    similarity = 1.0 - matrix
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos or not neg:
            losses.append(0.0)
            continue
        pos_logits = [
            -gamma * max(1 + margin - similarity[i, j], 0.0) * (similarity[i, j] - (1 - margin))
            for j in pos
        ]
        neg_logits = [
            gamma * max(similarity[i, j] + margin, 0.0) * (similarity[i, j] - margin) for j in neg
        ]
        losses.append(float(np.logaddexp(0.0, _logsumexp(pos_logits) + _logsumexp(neg_logits))))
    return np.array(losses)


def ref_soft_nearest_neighbor(pairs_: Pairs, temperature: float = 1.0) -> np.ndarray:
    matrix, positives, negatives = pairs_
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos:
            losses.append(0.0)
            continue
        same = sum(math.exp(-matrix[i, j] / temperature) for j in pos)
        every = sum(math.exp(-matrix[i, j] / temperature) for j in pos + neg)
        losses.append(-math.log(same / every))
    return np.array(losses)


def ref_supcon(pairs_: Pairs, temperature: float = 0.1) -> np.ndarray:
    matrix, positives, negatives = pairs_
    similarity = 1.0 - matrix
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos:
            losses.append(0.0)
            continue
        log_denominator = _logsumexp([similarity[i, a] / temperature for a in pos + neg])
        losses.append(-np.mean([similarity[i, p] / temperature - log_denominator for p in pos]))
    return np.array(losses)


def ref_proxy_anchor(
    labels: Sequence[int] | np.ndarray,
    embeddings: np.ndarray,
    proxies: np.ndarray,
    alpha: float = 32.0,
    delta: float = 0.1,
) -> float:
    """The batch's proxy-anchor loss (one number), cosine similarity."""
    positive_terms, negative_terms = [], []
    for c, proxy in enumerate(proxies.astype("float64")):
        sims = [1.0 - ref_distance("cosine", x, proxy) for x in embeddings.astype("float64")]
        pos = [s for s, y in zip(sims, labels, strict=True) if y == c]
        neg = [s for s, y in zip(sims, labels, strict=True) if y != c]
        if pos:
            positive_terms.append(_log1p_sum_exp([-alpha * (s - delta) for s in pos]))
        negative_terms.append(_log1p_sum_exp([alpha * (s + delta) for s in neg]))
    return sum(positive_terms) / max(len(positive_terms), 1) + sum(negative_terms) / len(proxies)


def ref_lifted_struct(pairs_: Pairs, margin: float = 1.0) -> np.ndarray:
    matrix, positives, negatives = pairs_
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos or not neg:
            losses.append(0.0)
            continue
        pair_losses = []
        for j in pos:
            terms = [margin - matrix[i, k] for k in neg] + [
                margin - matrix[j, k] for k in negatives[j]
            ]
            value = matrix[i, j] + _logsumexp(terms)
            pair_losses.append(max(value, 0.0) ** 2 / 2)
        losses.append(float(np.mean(pair_losses)))
    return np.array(losses)


def ref_multiple_negatives_ranking(pairs_: Pairs, temperature: float = 0.05) -> np.ndarray:
    matrix, positives, negatives = pairs_
    logits = (1.0 - matrix) / temperature
    losses = []
    for i, (pos, neg) in enumerate(zip(positives, negatives, strict=True)):
        if not pos:
            losses.append(0.0)
            continue
        losses.append(
            float(
                np.mean(
                    [
                        _logsumexp([logits[i, p]] + [logits[i, n] for n in neg]) - logits[i, p]
                        for p in pos
                    ]
                )
            )
        )
    return np.array(losses)


REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "multisimilarity": ref_multisimilarity,
    "triplet": ref_triplet,
    "pn": ref_pn,
    "circle": ref_circle,
    "snn": ref_soft_nearest_neighbor,
    "supcon": ref_supcon,
    "liftedstruct": ref_lifted_struct,
    "mnr": ref_multiple_negatives_ranking,
}


# --- helpers ----------------------------------------------------------------------

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "multisimilarity": losses.multisimilarity_loss,
    "triplet": losses.triplet_loss,
    "pn": losses.pn_loss,
    "circle": losses.circle_loss,
    "snn": losses.soft_nearest_neighbor_loss,
    "supcon": losses.supcon_loss,
    "liftedstruct": losses.lifted_struct_loss,
    "mnr": losses.multiple_negatives_ranking_loss,
}
DEFAULT_DISTANCE = {name: "cosine" for name in FUNCTIONS} | {
    "snn": "squared_euclidean",
    "liftedstruct": "euclidean",
}

# Four unit vectors at right angles; classes {0, 1} and {2, 3} are neighbours on
# the circle. Cosine similarities from e0: s01 = 0, s02 = -1, s03 = 0 (and alike
# for every anchor: one positive at s = 0, negatives at s = -1 and s = 0).
SQUARE = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype="float32")
SQUARE_LABELS = np.array([0, 0, 1, 1])


def _numpy(x: object) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _random_batch(seed: int, size: int = 8, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=size)
    embeddings = rng.normal(size=(size, 4))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return labels, embeddings.astype("float32")


def _every_loss(name: str, distance: str = "cosine") -> keras.losses.Loss:
    if name == "proxyanchor":
        return losses.get(name, num_classes=3, embedding_dim=2, distance=distance)
    if name == "xbm":
        inner = losses.MultiSimilarityLoss(distance)
        return losses.get(name, loss=inner, embedding_dim=2, memory_size=8)
    return losses.get(name, distance=distance)


# --- hand-derived values ----------------------------------------------------------


def test_multisimilarity_loss_of_square_batch_matches_hand_derivation() -> None:
    """Defaults α=2, β=40, ε=0.1, λ=0.5 on SQUARE (every anchor alike).

    Mining: negatives kept if s + 0.1 > min positive s = 0: s = 0 kept, s = -1 not.
    Positives kept if s - 0.1 < max negative s = 0: s = 0 kept.
    L = 1/2·log(1 + exp(-2(0 - 0.5))) + 1/40·log(1 + exp(40(0 - 0.5)))
      = 0.5·log(1 + e) + log(1 + e^-20)/40 = 0.656630844 + 5e-11.
    """
    result = _numpy(losses.multisimilarity_loss(SQUARE_LABELS, SQUARE))
    np.testing.assert_allclose(result, [0.6566308] * 4, rtol=1e-6)


def test_multisimilarity_mining_drops_the_easy_negative() -> None:
    """α = β = 1, λ = 0 on SQUARE: each term is log(1 + Σ exp(∓s)).

    ε = 0.1 keeps only the negative at s = 0: L = log(1 + e^0) + log(1 + e^0) = 2 log 2
    = 1.3862944. ε = 10 keeps the negative at s = -1 too:
    L = log 2 + log(1 + e^0 + e^-1) = 0.6931472 + 0.8619948 = 1.5551420.
    """
    mined = losses.multisimilarity_loss(SQUARE_LABELS, SQUARE, alpha=1, beta=1, lmda=0)
    unmined = losses.multisimilarity_loss(
        SQUARE_LABELS, SQUARE, alpha=1, beta=1, lmda=0, epsilon=10
    )
    np.testing.assert_allclose(_numpy(mined), [1.3862944] * 4, rtol=1e-6)
    np.testing.assert_allclose(_numpy(unmined), [1.5551420] * 4, rtol=1e-6)


# Euclidean, labels [0, 0, 0, 1]: x0=(0,0), x1=(1,0), x2=(3,0), x3=(0,2).
LINE = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0]], dtype="float32")
LINE_LABELS = np.array([0, 0, 0, 1])


def test_triplet_hard_mining_picks_farthest_positive() -> None:
    """Margin 0.5, hard negatives. d01=1, d02=3, d03=2, d12=2, d13=√5, d23=√13.

    Anchor 0: farthest positive 3, negative 2 → 3 - 2 + 0.5 = 1.5.
    Anchor 1: farthest positive 2, negative √5 → 2.5 - √5 = 0.2639320.
    Anchor 2: farthest positive 3, negative √13 = 3.606 → 3 - 3.606 + 0.5 < 0 → 0.
    Anchor 3: no positive → 0.
    With easy (closest) positives: 1 - 2 + .5, 1 - √5 + .5, 2 - √13 + .5 are all < 0.
    """
    hard = losses.triplet_loss(
        LINE_LABELS, LINE, distance="euclidean", negative_mining="hard", margin=0.5
    )
    easy = losses.triplet_loss(
        LINE_LABELS,
        LINE,
        distance="euclidean",
        positive_mining="easy",
        negative_mining="hard",
        margin=0.5,
    )
    np.testing.assert_allclose(_numpy(hard), [1.5, 0.2639320, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(_numpy(easy), [0.0, 0.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    ("strategy", "expected"), [("hard", 2.0), ("semi-hard", 0.5), ("easy", 0.0)]
)
def test_triplet_negative_mining_picks_closest_semi_hard_or_farthest_negative(
    strategy: str, expected: float
) -> None:
    """Anchor (0,0), positive (1,0) at 1; negatives (0,.5), (0,2), (0,4) at 0.5, 2, 4.

    Margin 1.5. hard: closest negative 0.5 → 1 - 0.5 + 1.5 = 2. semi-hard: closest
    negative beyond the positive, 2 → 1 - 2 + 1.5 = 0.5. easy: 4 → 1 - 4 + 1.5 < 0 → 0.
    """
    points = np.array([[0, 0], [1, 0], [0, 0.5], [0, 2], [0, 4]], dtype="float32")
    result = losses.triplet_loss(
        [0, 0, 1, 1, 1], points, distance="euclidean", negative_mining=strategy, margin=1.5
    )
    assert _numpy(result)[0] == pytest.approx(expected, abs=1e-6)


def test_triplet_semi_hard_falls_back_to_farthest_negative_when_all_are_closer() -> None:
    """Anchor (0,0), positive (3,0) at 3; negatives at 1 and 2, both closer than 3.

    No semi-hard negative: the farthest, 2, is used → 3 - 2 + 0.5 = 1.5 (hard would be 2.5).
    """
    points = np.array([[0, 0], [3, 0], [0, 1], [0, 2]], dtype="float32")
    result = losses.triplet_loss([0, 0, 1, 1], points, distance="euclidean", margin=0.5)
    assert _numpy(result)[0] == pytest.approx(1.5, abs=1e-6)


def test_triplet_soft_margin_is_softplus_of_the_gap() -> None:
    """SQUARE, cosine, hard mining: positive at distance 1, closest negative at 1.

    Gap 0 → log(1 + e^0) = log 2 = 0.6931472 for every anchor.
    """
    result = losses.triplet_loss(SQUARE_LABELS, SQUARE, negative_mining="hard", soft_margin=True)
    np.testing.assert_allclose(_numpy(result), [0.6931472] * 4, rtol=1e-6)


def test_pn_loss_uses_the_positive_when_its_negative_is_closer() -> None:
    """Euclidean, margin 0.5: a=(0,0), p=(2,0) same class; n=(3,0) other class.

    d_ap = 2, d_an = 3, d_pn = 1. Anchor a: triplet 2 - 3 + .5 < 0 → 0, but PN uses
    min(3, 1) = 1 → 2 - 1 + 0.5 = 1.5. Anchor p: its negative is at 1 → 1.5 for both.
    n has no positive → 0.
    """
    points = np.array([[0, 0], [2, 0], [3, 0]], dtype="float32")
    kwargs: dict[str, Any] = {"distance": "euclidean", "margin": 0.5}
    pn = losses.pn_loss([0, 0, 1], points, **kwargs)
    triplet = losses.triplet_loss([0, 0, 1], points, **kwargs)
    np.testing.assert_allclose(_numpy(pn), [1.5, 1.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(_numpy(triplet), [0.0, 1.5, 0.0], atol=1e-6)


def test_circle_loss_of_square_batch_matches_hand_derivation() -> None:
    """γ = 1, m = 0.25 on SQUARE: one positive at s = 0, negatives at s = -1 and 0.

    Positive: α_p = 1 + 0.25 - 0 = 1.25, Δ_p = 0.75 → logit -1.25·(0 - 0.75) = 0.9375.
    Negatives: α_n = [s + 0.25]₊ = 0 and 0.25, Δ_n = 0.25 → logits 0 and 0.25·(0 - 0.25)
    = -0.0625; their logsumexp is log(1 + e^-0.0625) = 0.6623854.
    L = log(1 + exp(0.9375 + 0.6623854)) = 1.7838054.
    """
    result = losses.circle_loss(SQUARE_LABELS, SQUARE, gamma=1.0, margin=0.25)
    np.testing.assert_allclose(_numpy(result), [1.7838054] * 4, rtol=1e-6)


@pytest.mark.parametrize(("temperature", "expected"), [(1.0, 0.7586237), (2.0, 0.8619948)])
def test_soft_nearest_neighbor_of_square_batch_matches_hand_derivation(
    temperature: float, expected: float
) -> None:
    """Squared Euclidean on SQUARE: positive at 2, negatives at 4 and 2.

    L = -log(e^{-2/T} / (e^{-2/T} + e^{-4/T} + e^{-2/T})) = log(2 + e^{-2/T}):
    T = 1 → log(2 + e^-2) = 0.7586237; T = 2 → log(2 + e^-1) = 0.8619948.
    """
    result = losses.soft_nearest_neighbor_loss(SQUARE_LABELS, SQUARE, temperature=temperature)
    np.testing.assert_allclose(_numpy(result), [expected] * 4, rtol=1e-6)


@pytest.mark.parametrize(("temperature", "expected"), [(1.0, 0.8619948), (0.5, 0.7586237)])
def test_supcon_of_square_batch_matches_hand_derivation(
    temperature: float, expected: float
) -> None:
    """Cosine on SQUARE: positive s = 0; others s = -1, 0.

    L = log(e^{0} + e^{-1/τ} + e^{0}) - 0/τ = log(2 + e^{-1/τ}):
    τ = 1 → 0.8619948; τ = 0.5 → log(2 + e^-2) = 0.7586237.
    """
    result = losses.supcon_loss(SQUARE_LABELS, SQUARE, temperature=temperature)
    np.testing.assert_allclose(_numpy(result), [expected] * 4, rtol=1e-6)


def test_supcon_averages_over_every_positive() -> None:
    """τ = 1, SQUARE with labels [0, 0, 0, 1]; anchor e0 has positives at s = 0, -1.

    L_0 = log(e^0 + e^-1 + e^0) - (0 + (-1)) / 2 = 0.8619948 + 0.5 = 1.3619948.
    """
    result = losses.supcon_loss([0, 0, 0, 1], SQUARE, temperature=1.0)
    assert _numpy(result)[0] == pytest.approx(1.3619948, abs=1e-6)


def test_proxy_anchor_of_two_points_matches_hand_derivation() -> None:
    """α = 1, δ = 0; proxies p0=(1,0), p1=(0,1); x0=(1,0) of class 0, x1=(0,1) of class 1.

    Similarities: s(x0,p0) = s(x1,p1) = 1, cross terms 0. Both proxies have positives.
    Positive term per proxy: log(1 + e^-1) = 0.3132617. Negative term: log(1 + e^0) = log 2.
    L = 0.3132617 + 0.6931472 = 1.0064089, repeated for both examples.
    """
    proxies = np.eye(2, dtype="float32")
    result = losses.proxy_anchor_loss([0, 1], np.eye(2, dtype="float32"), proxies, alpha=1, delta=0)
    np.testing.assert_allclose(_numpy(result), [1.0064089, 1.0064089], rtol=1e-6)


def test_proxy_anchor_counts_only_proxies_of_present_classes_in_positive_term() -> None:
    """α = 1, δ = 0; x0=(1,0), x1=(0,1) both of class 0; proxies as above.

    Positive term (p0 only): log(1 + e^-1 + e^0) = 0.8619948, averaged over 1 proxy.
    Negative terms: p0 has none → 0; p1 sees s = 0 and 1: log(1 + e^0 + e^1) = 1.5514450;
    averaged over both proxies → 0.7757225. L = 1.6377172.
    """
    proxies = np.eye(2, dtype="float32")
    result = losses.proxy_anchor_loss([0, 0], np.eye(2, dtype="float32"), proxies, alpha=1, delta=0)
    np.testing.assert_allclose(_numpy(result), [1.6377172, 1.6377172], rtol=1e-6)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_anchors_without_positives_cost_nothing(name: str) -> None:
    result = FUNCTIONS[name]([0, 1, 2, 3], SQUARE)
    np.testing.assert_allclose(_numpy(result), [0.0] * 4, atol=1e-6)


# --- agreement with the NumPy references ------------------------------------------

CASES: list[tuple[str, dict[str, Any]]] = [
    ("multisimilarity", {}),
    (
        "multisimilarity",
        {"alpha": 1.0, "beta": 10.0, "epsilon": 0.3, "lmda": 0.2, "distance": "euclidean"},
    ),
    ("triplet", {}),
    (
        "triplet",
        {"positive_mining": "easy", "negative_mining": "hard", "margin": 0.5, "distance": "l2"},
    ),
    ("triplet", {"negative_mining": "easy", "soft_margin": True, "distance": "sql2"}),
    ("pn", {}),
    ("pn", {"negative_mining": "hard", "soft_margin": True, "distance": "euclidean"}),
    ("pn", {"positive_mining": "easy", "negative_mining": "easy", "distance": "l1"}),
    ("circle", {}),
    ("circle", {"gamma": 16.0, "margin": 0.1, "distance": "inner_product"}),
    ("snn", {}),
    ("snn", {"temperature": 0.5, "distance": "cosine"}),
    ("supcon", {}),
    ("supcon", {"temperature": 0.5, "distance": "euclidean"}),
    ("liftedstruct", {}),
    ("liftedstruct", {"margin": 0.5, "distance": "cosine"}),
    ("mnr", {}),
    ("mnr", {"temperature": 0.5, "distance": "euclidean"}),
]
_ALIASES = {"l2": "euclidean", "sql2": "squared_euclidean", "l1": "manhattan"}


@pytest.mark.parametrize(("name", "kwargs"), CASES)
@pytest.mark.parametrize("seed", range(4))
def test_pair_loss_agrees_with_numpy_reference_on_random_batches(
    name: str, kwargs: dict[str, Any], seed: int
) -> None:
    labels, embeddings = _random_batch(seed)
    distance = kwargs.get("distance", DEFAULT_DISTANCE[name])
    reference_kwargs = {key: value for key, value in kwargs.items() if key != "distance"}
    expected = REFERENCES[name](
        ref_pairs(labels, embeddings, _ALIASES.get(distance, distance)), **reference_kwargs
    )
    function_result = _numpy(FUNCTIONS[name](labels, embeddings, **kwargs))
    class_result = _numpy(losses.get(name, **kwargs).call(labels, embeddings))
    np.testing.assert_allclose(function_result, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(class_result, function_result, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_proxy_anchor_agrees_with_numpy_reference_on_random_batches(seed: int) -> None:
    labels, embeddings = _random_batch(seed, classes=5)
    proxies = np.random.default_rng(100 + seed).normal(size=(5, 4)).astype("float32")
    expected = ref_proxy_anchor(labels, embeddings, proxies)
    result = _numpy(losses.proxy_anchor_loss(labels, embeddings, proxies))
    np.testing.assert_allclose(result, [expected] * len(labels), rtol=1e-4)


def test_column_labels_give_the_same_loss_as_flat_labels() -> None:
    labels, embeddings = _random_batch(0)
    flat = losses.multisimilarity_loss(labels, embeddings)
    column = losses.multisimilarity_loss(labels.reshape(-1, 1), embeddings)
    np.testing.assert_allclose(_numpy(column), _numpy(flat))


def test_losses_reduce_to_the_mean_over_the_batch() -> None:
    labels, embeddings = _random_batch(1)
    loss = losses.TripletLoss()
    per_example = _numpy(loss.call(labels, embeddings))
    assert per_example.shape == (8,)
    assert float(_numpy(loss(labels, embeddings))) == pytest.approx(per_example.mean(), rel=1e-6)


# --- cross-batch memory -----------------------------------------------------------


@pytest.mark.parametrize(
    ("inner", "reference"),
    [
        (
            losses.TripletLoss("euclidean", negative_mining="hard"),
            lambda p: ref_triplet(p, negative_mining="hard"),
        ),
        (losses.MultiSimilarityLoss(), ref_multisimilarity),
    ],
)
def test_xbm_adds_the_loss_of_the_batch_against_previous_batches(
    inner: losses.PairBasedLoss, reference: Callable[[Pairs], np.ndarray]
) -> None:
    """First call: memory empty → exactly the wrapped loss. Second call: plus the
    wrapped loss of batch 2's anchors against batch 1 as keys (weight 0.5)."""
    distance = _ALIASES.get(inner.distance.name, inner.distance.name)
    labels_1, embeddings_1 = _random_batch(1)
    labels_2, embeddings_2 = _random_batch(2)
    xbm = losses.XBMLoss(inner, embedding_dim=4, memory_size=16, weight=0.5)
    first = _numpy(xbm.call(labels_1, embeddings_1))
    second = _numpy(xbm.call(labels_2, embeddings_2))
    np.testing.assert_allclose(
        first, reference(ref_pairs(labels_1, embeddings_1, distance)), atol=1e-4
    )
    expected = reference(ref_pairs(labels_2, embeddings_2, distance)) + 0.5 * reference(
        ref_pairs(labels_2, embeddings_2, distance, labels_1, embeddings_1)
    )
    np.testing.assert_allclose(second, expected, rtol=1e-4, atol=1e-4)


def test_xbm_memory_is_a_ring_buffer_overwriting_the_oldest_entries() -> None:
    """Memory of 4, batches of 3: batch 1 fills slots 0-2, batch 2 slots 3, 0, 1."""
    xbm = losses.XBMLoss("multisimilarity", embedding_dim=2, memory_size=4)
    xbm.call(np.array([1, 2, 3]), np.eye(3, 2, dtype="float32"))
    xbm.call(np.array([4, 5, 6]), np.eye(3, 2, dtype="float32"))
    assert _numpy(xbm.memory_labels).tolist() == [5, 6, 3, 4]
    assert _numpy(xbm.memory_filled).tolist() == [1, 1, 1, 1]
    assert int(_numpy(xbm.position)) == 2
    xbm.reset()
    assert _numpy(xbm.memory_filled).tolist() == [0, 0, 0, 0]


def test_xbm_ignores_the_memory_during_warmup() -> None:
    labels, embeddings = _random_batch(3)
    inner = losses.MultiSimilarityLoss()
    xbm = losses.XBMLoss(inner, embedding_dim=4, memory_size=32, warmup_steps=2)
    xbm.call(labels, embeddings)
    np.testing.assert_allclose(
        _numpy(xbm.call(labels, embeddings)), _numpy(inner.call(labels, embeddings)), atol=1e-6
    )
    assert not np.allclose(
        _numpy(xbm.call(labels, embeddings)), _numpy(inner.call(labels, embeddings))
    )


def test_xbm_builds_its_wrapped_loss_from_a_name_and_distance() -> None:
    xbm = losses.get("xbm", loss="triplet", distance="euclidean", embedding_dim=4)
    assert isinstance(xbm, losses.XBMLoss)
    assert isinstance(xbm.loss, losses.TripletLoss)
    assert xbm.loss.distance.name == "euclidean"


def test_xbm_refuses_a_distance_next_to_a_built_loss() -> None:
    with pytest.raises(ModelError, match="Expected `distance` only with a loss name"):
        losses.XBMLoss(losses.TripletLoss(), embedding_dim=4, distance="cosine")


def test_lifted_struct_of_square_batch_matches_hand_derivation() -> None:
    """Euclidean, α=1: d(pos)=√2, negatives of each end at √2 and 2, so
    J = √2 + log(2·(e^(1-√2) + e^(1-2))) for every anchor."""
    j = math.sqrt(2) + math.log(2 * (math.exp(1 - math.sqrt(2)) + math.exp(-1)))
    result = losses.lifted_struct_loss(SQUARE_LABELS, SQUARE)
    np.testing.assert_allclose(_numpy(result), [j**2 / 2] * 4, rtol=1e-5)


def test_multiple_negatives_ranking_of_a_batch_of_pairs_is_the_in_batch_softmax() -> None:
    """Pairs (e0, e1) and (e2, e3), τ=1: each anchor's positive at s=0 among
    negatives at s=-1 and s=0: -log(e^0 / (e^0 + e^-1 + e^0))."""
    result = losses.multiple_negatives_ranking_loss(SQUARE_LABELS, SQUARE, temperature=1.0)
    expected = -math.log(1 / (2 + math.exp(-1)))
    np.testing.assert_allclose(_numpy(result), [expected] * 4, rtol=1e-6)


def test_xbm_refuses_a_loss_that_needs_key_to_key_distances() -> None:
    with pytest.raises(ModelError, match=r"Expected a pair-based loss .* Received: loss='pn_loss'"):
        losses.XBMLoss("pn", embedding_dim=4)


def test_xbm_refuses_a_batch_larger_than_its_memory() -> None:
    xbm = losses.XBMLoss("multisimilarity", embedding_dim=4, memory_size=4)
    labels, embeddings = _random_batch(0)
    with pytest.raises(
        ModelError, match=r"Expected batch size ≤ memory_size=4. Received: batch size 8"
    ):
        xbm.call(labels, embeddings)


# --- gradients --------------------------------------------------------------------

DEGENERATE_BATCHES = {
    "identical points, mixed labels": (np.array([0, 0, 1, 1]), np.tile([[0.6, 0.8]], (4, 1))),
    "one class only": (np.array([2, 2, 2, 2]), SQUARE),
    "no two alike": (np.array([0, 1, 2, 0]), SQUARE[[0, 1, 2, 0]]),
    "random": _random_batch(5, classes=3),
}


@pytest.mark.parametrize("name", [*losses.names()])
@pytest.mark.parametrize("batch", list(DEGENERATE_BATCHES))
def test_loss_and_gradients_are_finite_on_degenerate_batches(name: str, batch: str) -> None:
    labels, points = DEGENERATE_BATCHES[batch]
    points = np.asarray(points, dtype="float32")[:, :2]
    for distance in ("cosine", "euclidean"):
        loss = _every_loss(name)
        if hasattr(loss, "distance") and name != "xbm":
            loss.distance = losses.PairBasedLoss.__init__.__globals__["distances_module"].get(
                distance
            )
        embeddings = tf.Variable(points)
        for _ in range(2):  # twice, so that XBM also sees a filled memory
            with tf.GradientTape() as tape:
                value = loss(labels, embeddings)
            gradient = tape.gradient(value, embeddings)
            assert np.isfinite(value.numpy())
            assert gradient is None or np.all(np.isfinite(gradient.numpy()))


# --- arguments and resolution -----------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: losses.TripletLoss(margin=-1), "Expected margin ≥ 0. Received: margin=-1"),
        (
            lambda: losses.TripletLoss(negative_mining="hardest"),
            "Expected one of ['hard', 'semi-hard', 'easy']. Received: negative_mining='hardest'",
        ),
        (
            lambda: losses.PNLoss(positive_mining="semi-hard"),
            "Expected one of ['hard', 'easy']. Received: positive_mining='semi-hard'",
        ),
        (lambda: losses.MultiSimilarityLoss(alpha=0), "Expected alpha > 0. Received: alpha=0"),
        (lambda: losses.CircleLoss(gamma=-2), "Expected gamma > 0. Received: gamma=-2"),
        (lambda: losses.LiftedStructLoss(margin=-1), "Expected margin ≥ 0. Received: margin=-1"),
        (
            lambda: losses.MultipleNegativesRankingLoss(temperature=0),
            "Expected temperature > 0. Received: temperature=0",
        ),
        (
            lambda: losses.SupConLoss(temperature=0),
            "Expected temperature > 0. Received: temperature=0",
        ),
        (
            lambda: losses.ProxyAnchorLoss(num_classes=0, embedding_dim=4),
            "Expected an integer num_classes ≥ 1. Received: num_classes=0",
        ),
        (
            lambda: losses.ProxyAnchorLoss(3, 4, proxies=losses.Proxies(2, 4)),
            "Expected a Proxies layer of shape (3, 4). Received: shape (2, 4)",
        ),
        (lambda: losses.XBMLoss("ms", embedding_dim=0), "Received: embedding_dim=0"),
        (lambda: losses.MultiSimilarityLoss(distance="hamming"), "Received: distance='hamming'"),
    ],
)
def test_misconfigured_losses_say_what_was_expected_and_received(
    factory: Callable[[], object], message: str
) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        factory()


def test_labels_of_rank_three_are_refused() -> None:
    with pytest.raises(ModelError, match="Expected integer class labels of shape"):
        mining.flatten_labels(np.zeros((2, 2, 1)))


@pytest.mark.parametrize(
    ("identifier", "cls"),
    [
        ("multisimilarity", losses.MultiSimilarityLoss),
        ("MultiSimilarityLoss", losses.MultiSimilarityLoss),
        ("multi_similarity", losses.MultiSimilarityLoss),
        ("ms", losses.MultiSimilarityLoss),
        ("triplet", losses.TripletLoss),
        ("pn", losses.PNLoss),
        ("circle", losses.CircleLoss),
        ("snn", losses.SoftNearestNeighborLoss),
        ("soft_nearest_neighbor", losses.SoftNearestNeighborLoss),
        ("supcon", losses.SupConLoss),
        ("Lifted_Structure_Loss", losses.LiftedStructLoss),
        ("multiple-negatives-ranking", losses.MultipleNegativesRankingLoss),
        ("SupervisedContrastive", losses.SupConLoss),
    ],
)
def test_get_resolves_loss_names_and_aliases(identifier: str, cls: type) -> None:
    assert type(losses.get(identifier)) is cls


def test_get_passes_keyword_arguments_to_the_loss() -> None:
    loss = losses.get("proxyanchor", num_classes=3, embedding_dim=8, alpha=16)
    assert isinstance(loss, losses.ProxyAnchorLoss)
    assert (loss.num_classes, loss.alpha) == (3, 16.0)
    assert tuple(loss.proxies.shape) == (3, 8)


def test_get_returns_a_loss_instance_unchanged() -> None:
    loss = losses.CircleLoss()
    assert losses.get(loss) is loss


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        ("arcface", "Unknown loss. Expected one of"),
        ({"margin": 1}, "Expected a config dict with a 'name' or 'class_name' key"),
        ({"name": "my_renamed_loss"}, "Received: name='my_renamed_loss'"),
        (42, "Received: loss=42 of type int"),
    ],
)
def test_get_rejects_what_it_cannot_resolve(identifier: object, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        losses.get(identifier)  # type: ignore[arg-type]


def test_get_of_a_stateful_loss_without_its_arguments_names_them() -> None:
    with pytest.raises(ModelError, match="Expected the arguments of ProxyAnchorLoss"):
        losses.get("proxyanchor")
