"""Compare encoders on the same hold-out: the numbers the promotion decision rests on.

Protocol: the training part of the run's data is the index, the hold-out part
the queries, as in serving (queries are new items, the index holds the known
ones). Both the candidate and the active model embed both parts themselves, and
exact search scores them (`model.evaluation.retrieve`): recall@1, recall@5 and
MAP@R, micro-averaged over answerable queries, with macro averages beside.
Every class counts, including classes the active model never saw in training;
``seen`` / ``unseen`` break the numbers down by that.

The same search calibrates the model's distance threshold (`model.evaluation.calibrate`,
best F1 of "the nearest neighbour is the query's class"): ``calibration.threshold``
in the metrics, which a promoted version carries in its ``metrics.json`` and
``/v1/classify`` applies, in the units of the model's distance.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from model.datasets import Dataset
from model.evaluation import calibrate, retrieve
from model.registry import Encoder

KS = (1, 5)


def evaluate(
    encoder: Encoder,
    index: Dataset,
    queries: Dataset,
    seen_classes: Collection[str] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Retrieval metrics of ``encoder`` with ``queries`` searched in ``index``.

    Args:
        encoder: the model to evaluate.
        index: labelled items to search (raw payloads).
        queries: labelled queries (raw payloads), same class names as ``index``.
        seen_classes: class names the encoder was trained on; adds ``seen`` and
            ``unseen`` breakdowns when given.
        batch_size: encoder batch size.

    Returns:
        ``recall@1``, ``recall@5``, ``map@r``, ``macro`` (the same, per class
        first), ``queries``, ``skipped``, ``calibration`` (the threshold of best
        F1 on these queries, with its precision, recall and F1; None without
        queries) and optionally ``seen`` / ``unseen``.
    """
    index_vectors = encoder.embed_payloads(index.x, batch_size)
    query_vectors = encoder.embed_payloads(queries.x, batch_size)
    results = retrieve(
        query_vectors, queries.y, index_vectors, index.y, ks=KS, distance=encoder.distance
    )
    metrics = _summary(results.report().to_dict())
    answered = np.isfinite(results.nearest_distance)
    metrics["calibration"] = (
        calibrate(results.nearest_distance[answered], results.matches[answered]).to_dict()
        if answered.any()
        else None
    )
    if seen_classes is not None:
        names = np.asarray(queries.class_names, dtype=object)[queries.y]
        seen = np.isin(names, list(seen_classes))
        for part, mask in (("seen", seen), ("unseen", ~seen)):
            metrics[part] = _summary(results.subset(mask).report().to_dict(), macro=False)
    return metrics


def trained_classes(config: Mapping[str, Any]) -> list[str] | None:
    """Class names a registered model was trained on, from its config (None when unknown)."""
    dataset = config.get("dataset") or {}
    names, counts = dataset.get("class_names"), dataset.get("class_counts")
    if not isinstance(names, list):
        return None
    if isinstance(counts, list) and len(counts) == len(names):
        return [str(n) for n, c in zip(names, counts, strict=True) if c]
    return [str(n) for n in names]


def _summary(report: Mapping[str, Any], macro: bool = True) -> dict[str, Any]:
    keys = [f"recall@{k}" for k in KS] + ["map@r"]
    out: dict[str, Any] = {k: _number(report.get(k)) for k in keys}
    if macro:
        out["macro"] = {k: _number(report.get("macro", {}).get(k)) for k in keys}
    out["queries"] = int(report.get("queries", 0))
    out["skipped"] = int(report.get("skipped", 0))
    return out


def _number(value: Any) -> float | None:
    """JSON has no NaN: a metric without answerable queries is None."""
    if value is None:
        return None
    number = float(value)
    return round(number, 6) if math.isfinite(number) else None
