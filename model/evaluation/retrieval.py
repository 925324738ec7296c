"""Exact retrieval metrics: recall@k, precision@k, R-precision and MAP@R, micro and macro.

Definitions, for one query with label ``c`` whose ranked neighbours (closest
first, the query itself excluded in leave-one-out) have relevance ``rel_i`` (1
when neighbour ``i`` has label ``c``), and ``R`` = the number of index items with
label ``c`` (the query not counted):

- **recall@k** = 1 if any of the first ``k`` neighbours is relevant, else 0 (the
  retrieval "hit rate" used by TensorFlow Similarity and the metric-learning
  literature; it is *not* the share of the ``R`` relevant items found);
- **precision@k** = (Σ_{i≤k} rel_i) / k;
- **R-precision** = (Σ_{i≤R} rel_i) / R;
- **MAP@R** = (1/R) Σ_{i≤R} rel_i · P(i), with P(i) the precision at rank ``i``
  (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020).

*Micro* averages over queries; *macro* averages per class first, then over
classes, so small classes weigh as much as large ones. Queries with ``R = 0``
(no other item of their class in the index) cannot be answered and are left
out of every average; `RetrievalReport.skipped` counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from model.evaluation.search import DistanceLike, _row_batches, pairwise_distances, top_k
from simstream.errors import ModelError

METRICS_PER_QUERY = ("map@r", "r_precision")


@dataclass(frozen=True)
class RetrievalReport:
    """Aggregated retrieval metrics.

    Attributes:
        micro: metric name → mean over answerable queries.
        macro: metric name → mean over classes of the per-class means.
        queries: number of queries.
        skipped: queries left out because their class has no other index item.
    """

    micro: dict[str, float]
    macro: dict[str, float]
    queries: int
    skipped: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the micro metrics at top level, plus ``macro`` and counts."""
        return {
            **self.micro,
            "macro": dict(self.macro),
            "queries": self.queries,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, eq=False)
class QueryResults:
    """Per-query retrieval outcomes, to aggregate or split (e.g. seen / unseen classes).

    Attributes:
        labels: the label of each query, ``(Q,)``.
        ks: the cut-offs of recall@k and precision@k.
        scores: metric name → per-query value ``(Q,)`` (NaN where ``relevant`` is 0).
        relevant: ``R`` of each query.
        nearest_distance: distance to the nearest neighbour of each query.
        nearest_label: label of that neighbour.
    """

    labels: np.ndarray
    ks: tuple[int, ...]
    scores: dict[str, np.ndarray] = field(repr=False)
    relevant: np.ndarray = field(repr=False)
    nearest_distance: np.ndarray = field(repr=False)
    nearest_label: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def matches(self) -> np.ndarray:
        """Whether each query's nearest neighbour has the query's label."""
        return self.nearest_label == self.labels

    def subset(self, mask: np.ndarray) -> QueryResults:
        """The queries where ``mask`` (boolean or indices) selects them."""
        return replace(
            self,
            labels=self.labels[mask],
            scores={name: values[mask] for name, values in self.scores.items()},
            relevant=self.relevant[mask],
            nearest_distance=self.nearest_distance[mask],
            nearest_label=self.nearest_label[mask],
        )

    def report(self) -> RetrievalReport:
        """Micro and macro averages over the answerable queries."""
        answerable = self.relevant > 0
        labels = self.labels[answerable]
        classes = np.unique(labels)
        micro, macro = {}, {}
        for name, values in self.scores.items():
            kept = values[answerable]
            micro[name] = float(kept.mean()) if len(kept) else float("nan")
            per_class = [kept[labels == c].mean() for c in classes]
            macro[name] = float(np.mean(per_class)) if per_class else float("nan")
        return RetrievalReport(
            micro=micro,
            macro=macro,
            queries=len(self),
            skipped=int((~answerable).sum()),
        )


def retrieve(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    index_embeddings: np.ndarray | None = None,
    index_labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    distance: DistanceLike = "cosine",
    batch_size: int | None = None,
) -> QueryResults:
    """Search every query exhaustively and score it.

    Args:
        query_embeddings: ``(Q, D)``.
        query_labels: ``(Q,)`` integer labels.
        index_embeddings: ``(N, D)``; ``None`` for leave-one-out, where the
            queries are also the index and each query's own entry is excluded.
        index_labels: ``(N,)``; given with ``index_embeddings``.
        ks: cut-offs for recall@k and precision@k.
        distance: anything `model.distances.get` resolves.
        batch_size: queries per distance matrix (memory bound); automatic by default.

    Returns:
        Per-query results; call `QueryResults.report` for averages.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ModelError(f"Invalid value for argument `ks`. Expected k ≥ 1. Received: ks={ks}")
    query_labels = np.asarray(query_labels)
    leave_one_out = index_embeddings is None
    if leave_one_out:
        index_embeddings, index_labels = query_embeddings, query_labels
    elif index_labels is None:
        raise ModelError("Expected `index_labels` with `index_embeddings`. Received: None")
    index_labels = np.asarray(index_labels)
    assert index_embeddings is not None
    if len(query_embeddings) != len(query_labels) or len(index_embeddings) != len(index_labels):
        raise ModelError(
            "Expected one label per embedding. Received: "
            f"{len(query_embeddings)}/{len(query_labels)} queries, "
            f"{len(index_embeddings)}/{len(index_labels)} index items"
        )
    classes, index_counts = np.unique(index_labels, return_counts=True)
    lookup = dict(zip(classes.tolist(), index_counts.tolist(), strict=True))
    relevant = np.array([lookup.get(c, 0) for c in query_labels.tolist()], np.int64)
    if leave_one_out:
        relevant -= 1
    drop = 1 if leave_one_out else 0
    names = [f"{m}@{k}" for k in ks for m in ("recall", "precision")] + list(METRICS_PER_QUERY)
    scores = {name: np.full(len(query_labels), np.nan) for name in names}
    nearest_distance = np.full(len(query_labels), np.inf, np.float32)
    nearest_label = np.full(len(query_labels), -1, np.int64)
    for start, rows in _row_batches(len(query_labels), len(index_labels), batch_size):
        stop = start + rows
        matrix = pairwise_distances(query_embeddings[start:stop], index_embeddings, distance)
        if leave_one_out:
            matrix[np.arange(rows), np.arange(start, stop)] = np.inf
        r = relevant[start:stop]
        width = max(ks[-1], int(r.max(initial=0)))
        idx, dist = top_k(matrix, width, drop=drop)
        if idx.shape[1] == 0:
            continue
        hits = index_labels[idx] == query_labels[start:stop, None]
        nearest_distance[start:stop] = dist[:, 0]
        nearest_label[start:stop] = index_labels[idx[:, 0]]
        for k in ks:
            scores[f"recall@{k}"][start:stop] = hits[:, :k].any(axis=1)
            scores[f"precision@{k}"][start:stop] = hits[:, :k].sum(axis=1) / min(k, hits.shape[1])
        within_r = np.arange(hits.shape[1])[None, :] < r[:, None]
        relevant_hits = hits & within_r
        ranks = np.arange(1, hits.shape[1] + 1)[None, :]
        precision_at_i = np.cumsum(hits, axis=1) / ranks
        with np.errstate(invalid="ignore", divide="ignore"):
            scores["r_precision"][start:stop] = relevant_hits.sum(axis=1) / r
            scores["map@r"][start:stop] = (precision_at_i * relevant_hits).sum(axis=1) / r
    unanswerable = relevant <= 0
    for values in scores.values():
        values[unanswerable] = np.nan
    return QueryResults(
        labels=query_labels,
        ks=ks,
        scores=scores,
        relevant=np.maximum(relevant, 0),
        nearest_distance=nearest_distance,
        nearest_label=nearest_label,
    )


def evaluate_retrieval(
    query_embeddings: np.ndarray,
    query_labels: np.ndarray,
    index_embeddings: np.ndarray | None = None,
    index_labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
    distance: DistanceLike = "cosine",
    batch_size: int | None = None,
) -> RetrievalReport:
    """`retrieve` then `QueryResults.report`: the averaged metrics in one call."""
    return retrieve(
        query_embeddings, query_labels, index_embeddings, index_labels, ks, distance, batch_size
    ).report()


def split_by_class(
    labels: np.ndarray, seen_classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(seen, unseen)``: whether each label is among ``seen_classes``."""
    seen = np.isin(np.asarray(labels), np.asarray(list(seen_classes)))
    return seen, ~seen
