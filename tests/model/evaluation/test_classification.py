from __future__ import annotations

import numpy as np
import pytest

from model.evaluation import UNKNOWN, classification_report, knn_classify, nearest_class_mean
from simstream.errors import ModelError

# Index on a line: A=0 at 0.0 and 0.1, B=1 at 0.15, 0.2, 0.25. A query at 0.12 is
# .12 .02 from the As and .03 .08 .13 from the Bs: nearest is A, 3 of 5 neighbours are B.
INDEX = np.array([[0.0], [0.1], [0.15], [0.2], [0.25]])
LABELS = np.array([0, 0, 1, 1, 1])
QUERY = np.array([[0.12]])


def test_nearest_vote_answers_the_label_of_the_nearest_neighbour() -> None:
    labels, distances = knn_classify(QUERY, INDEX, LABELS, distance="euclidean")
    assert labels.tolist() == [0] and distances[0] == pytest.approx(0.02)


def test_majority_vote_answers_the_most_frequent_label_among_k() -> None:
    labels, _ = knn_classify(QUERY, INDEX, LABELS, k=5, vote="majority", distance="euclidean")
    assert labels.tolist() == [1]


def test_only_neighbours_within_the_threshold_vote_and_ties_go_to_the_nearest() -> None:
    # Within 0.05: A at .02 and B at .03, one vote each: A is nearer.
    labels, _ = knn_classify(
        QUERY, INDEX, LABELS, k=5, vote="majority", threshold=0.05, distance="euclidean"
    )
    assert labels.tolist() == [0]


def test_a_query_with_no_neighbour_within_the_threshold_is_unknown() -> None:
    queries = np.array([[0.12], [5.0]])
    for vote in ("nearest", "majority"):
        labels, _ = knn_classify(
            queries,
            INDEX,
            LABELS,
            k=3,
            vote=vote,  # type: ignore[arg-type]
            threshold=0.5,
            distance="euclidean",
        )
        assert labels[1] == UNKNOWN


def test_the_report_counts_unknown_as_wrong_and_as_uncovered() -> None:
    report = classification_report(np.array([0, 1, 1, 2]), np.array([0, 1, UNKNOWN, 0]))
    assert report.accuracy == 0.5 and report.coverage == 0.75
    assert report.accuracy_known == pytest.approx(2 / 3) and report.queries == 4


def test_an_invalid_vote_or_empty_index_is_refused() -> None:
    with pytest.raises(ModelError, match="vote"):
        knn_classify(QUERY, INDEX, LABELS, vote="plurality")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="non-empty index"):
        knn_classify(QUERY, INDEX[:0], LABELS[:0])


def test_the_nearest_class_mean_is_not_fooled_by_a_large_class_outlier() -> None:
    # A: 0, .1, .2 and an outlier at .9 (mean .3); B: 1.2 and 1.6 (mean 1.4).
    # The query at 1.0 is .1 from A's outlier but .4 from B's mean and .7 from A's.
    index = np.array([[0.0], [0.1], [0.2], [0.9], [1.2], [1.6]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    query = np.array([[1.0]])

    nearest, _ = knn_classify(query, index, labels, distance="euclidean")
    by_mean, distances = nearest_class_mean(query, index, labels, distance="euclidean")

    assert (nearest.tolist(), by_mean.tolist()) == ([0], [1])
    assert distances[0] == pytest.approx(0.4)


def test_leave_one_out_classifies_the_first_index_items_without_their_own_vote() -> None:
    # On a line: class 0 at 0 and 2, class 1 at 1.2.
    index = np.array([[0.0], [2.0], [1.2]])
    labels = np.array([0, 0, 1])
    nearest, distances = knn_classify(index[:1], index, labels, distance="euclidean")
    assert (nearest.tolist(), distances.tolist()) == ([0], [0.0])
    nearest, distances = knn_classify(
        index[:1], index, labels, distance="euclidean", exclude_self=True
    )
    assert nearest.tolist() == [1] and distances == pytest.approx([1.2])
    # Class 0's mean is 1 with the query, 2 without it: class 1's (1.2) is then nearer.
    by_mean, distances = nearest_class_mean(index[:1], index, labels, distance="euclidean")
    assert by_mean.tolist() == [0] and distances == pytest.approx([1.0])
    by_mean, distances = nearest_class_mean(
        index[:1], index, labels, distance="euclidean", exclude_self=True
    )
    assert by_mean.tolist() == [1] and distances == pytest.approx([1.2])
    # The only member of its class cannot be answered with it.
    alone, _ = nearest_class_mean(index[2:], index[::-1], labels[::-1], "euclidean", True)
    assert alone.tolist() == [0]


@pytest.mark.parametrize(("candidates", "expected"), [(None, 1), (3, 1), (2, 2), (1, 0)])
def test_only_the_classes_of_the_nearest_items_compete_for_the_nearest_mean(
    candidates: int | None, expected: int
) -> None:
    # Class 0: one item next to the query, nine far away; class 2: one item a bit farther;
    # class 1: two items far apart whose mean is the query itself.
    index = np.array([[0, 0]] + [[10, 0]] * 9 + [[-0.5, 0], [1, 5], [1, -5]], np.float32)
    labels = np.array([0] * 10 + [2, 1, 1])

    predicted, _ = nearest_class_mean(
        np.array([[1, 0]], np.float32), index, labels, "l2", candidates=candidates
    )

    assert predicted.tolist() == [expected]
