from __future__ import annotations

import numpy as np
import pytest

from model.evaluation import evaluate_retrieval, retrieve, split_by_class
from simstream.errors import ModelError

# Five points on a line (euclidean distance), labels A=0, B=1:
#   p0=0.0 A, p1=0.1 A, p2=0.25 B, p3=1.0 B, p4=1.1 B.
# Leave-one-out rankings (relevance of each rank; R = other items of the class):
#   q0 A: p1 p2 p3 p4 → 1 0 0 0, R=1   q1 A: p0 p2 p3 p4 → 1 0 0 0, R=1
#   q2 B: p1 p0 p3 p4 → 0 0 1 1, R=2   q3 B: p4 p2 p1 p0 → 1 1 0 0, R=2
#   q4 B: p3 p2 p1 p0 → 1 1 0 0, R=2
POINTS = np.array([[0.0], [0.1], [0.25], [1.0], [1.1]])
LABELS = np.array([0, 0, 1, 1, 1])


def test_leave_one_out_metrics_match_the_hand_computed_rankings() -> None:
    report = evaluate_retrieval(POINTS, LABELS, ks=(1, 2), distance="euclidean")
    # recall@1 per query 1 1 0 1 1; precision@2 .5 .5 0 1 1; MAP@R and R-precision 1 1 0 1 1.
    assert report.micro["recall@1"] == pytest.approx(4 / 5)
    assert report.micro["precision@2"] == pytest.approx(3 / 5)
    assert report.micro["map@r"] == pytest.approx(4 / 5)
    assert report.micro["r_precision"] == pytest.approx(4 / 5)
    # Macro: class A averages 1, class B 2/3 (recall@1) and (0 + 1 + 1)/3 (precision@2).
    assert report.macro["recall@1"] == pytest.approx((1 + 2 / 3) / 2)
    assert report.macro["precision@2"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert report.queries == 5 and report.skipped == 0


def test_map_at_r_rewards_relevant_items_by_their_rank() -> None:
    # Query B at 0 against A .1, B .2, B .5, A .6: R=2, relevance 0 1 within R,
    # so R-precision = 1/2 and MAP@R = (0 + 1/2 · 1) / 2 = 1/4.
    index = np.array([[0.1], [0.2], [0.5], [0.6]])
    results = retrieve(
        np.array([[0.0]]),
        np.array([1]),
        index,
        np.array([0, 1, 1, 0]),
        ks=(1, 2),
        distance="euclidean",
    )
    assert results.scores["r_precision"][0] == pytest.approx(0.5)
    assert results.scores["map@r"][0] == pytest.approx(0.25)
    assert results.scores["recall@1"][0] == 0 and results.scores["recall@2"][0] == 1
    assert results.nearest_label[0] == 0 and results.nearest_distance[0] == pytest.approx(0.1)


def test_a_query_whose_class_has_no_other_item_is_skipped_from_the_averages() -> None:
    points = np.vstack([POINTS, [[5.0]]])
    labels = np.append(LABELS, 2)
    report = evaluate_retrieval(points, labels, ks=(1,), distance="euclidean")
    assert report.skipped == 1 and report.queries == 6
    assert report.micro["recall@1"] == pytest.approx(4 / 5)


def test_seen_and_unseen_subsets_report_their_own_queries() -> None:
    results = retrieve(POINTS, LABELS, ks=(1,), distance="euclidean")
    seen, unseen = split_by_class(LABELS, [0])
    assert seen.tolist() == [True, True, False, False, False]
    assert results.subset(seen).report().micro["recall@1"] == 1.0
    assert results.subset(unseen).report().micro["recall@1"] == pytest.approx(2 / 3)
    assert results.subset(unseen).matches.tolist() == [False, True, True]


def test_batching_does_not_change_any_metric() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 8)), rng.integers(0, 7, 300)
    whole = evaluate_retrieval(x, y, ks=(1, 5), distance="cosine")
    batched = evaluate_retrieval(x, y, ks=(1, 5), distance="cosine", batch_size=7)
    assert whole.micro == pytest.approx(batched.micro)
    assert whole.macro == pytest.approx(batched.macro)


def test_a_perfectly_clustered_set_scores_one_everywhere() -> None:
    x = np.repeat(np.eye(4), 5, axis=0) + np.random.default_rng(1).normal(0, 0.01, (20, 4))
    y = np.repeat(np.arange(4), 5)
    report = evaluate_retrieval(x, y, ks=(1, 4))
    assert all(v == pytest.approx(1.0) for v in report.micro.values())


def test_invalid_cut_offs_or_mismatched_labels_are_refused() -> None:
    with pytest.raises(ModelError, match="ks"):
        retrieve(POINTS, LABELS, ks=(0,))
    with pytest.raises(ModelError, match="one label per embedding"):
        retrieve(POINTS, LABELS[:3])
    with pytest.raises(ModelError, match="index_labels"):
        retrieve(POINTS, LABELS, index_embeddings=POINTS)
