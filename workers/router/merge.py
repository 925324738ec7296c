"""`merge`: the top-k of the whole cluster from the top-k of each partition set.

Each set answers its own k nearest of every query (its partitions are disjoint
from the others'), so the cluster's k nearest are among them: sort the union
by distance, ties by id (the order does not depend on which set answered
first), and keep k. An answer is exhaustive when every set's was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def merge(
    answers: Sequence[dict[str, Any]], queries: int, k: int
) -> list[tuple[list[dict[str, Any]], bool]]:
    """Per query, the k nearest neighbours over ``answers`` and whether the answer is exhaustive.

    Args:
        answers: the nodes' `InternalResults` bodies, one per partition set.
        queries: how many queries each body answers.
        k: neighbours to keep per query.

    Returns:
        Per query, its neighbour rows (``id``, ``distance``, ``label``, ``metadata``),
        nearest first, and its exhaustive flag.
    """
    out: list[tuple[list[dict[str, Any]], bool]] = []
    for q in range(queries):
        rows: list[dict[str, Any]] = []
        exhaustive = True
        for answer in answers:
            result = answer["results"][q]
            exhaustive &= bool(result["exhaustive"])
            rows.extend(
                {"id": i, "distance": d, "label": label, "metadata": meta}
                for i, d, label, meta in zip(
                    result["ids"],
                    result["distances"],
                    result["labels"],
                    result["metadata"],
                    strict=True,
                )
            )
        rows.sort(key=lambda r: (r["distance"], r["id"]))
        out.append((rows[:k], exhaustive))
    return out
