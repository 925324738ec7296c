"""Evaluation plots: a confusion matrix and a 2-D projection of embeddings coloured by class.

Both write PNGs with Matplotlib's Agg canvas (no display needed) and return
what they drew, so callers and tests can check it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.evaluation.classification import UNKNOWN
from simstream.errors import ModelError

UNKNOWN_NAME = "unknown"
"""Column name of predictions beyond the threshold (`UNKNOWN`)."""


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]
) -> tuple[np.ndarray, list[int]]:
    """Counts of (true class, predicted class) pairs.

    Returns:
        ``(matrix, columns)``: rows follow ``classes``; columns are ``classes``
        plus `UNKNOWN` when any prediction is unknown. Every query is counted
        once, so the matrix sums to ``len(y_true)``.

    Raises:
        ModelError: when the arrays differ in length or hold a class not listed.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ModelError(
            f"Expected as many predictions as labels. Received: {len(y_pred)} and {len(y_true)}"
        )
    columns = list(classes) + ([UNKNOWN] if (y_pred == UNKNOWN).any() else [])
    row_of = {c: i for i, c in enumerate(classes)}
    column_of = {c: i for i, c in enumerate(columns)}
    unlisted = sorted({int(v) for v in (*y_true, *y_pred)} - set(columns))
    if unlisted:
        raise ModelError(f"Expected labels among {list(classes)}. Received: {unlisted}")
    matrix = np.zeros((len(classes), len(columns)), np.int64)
    np.add.at(matrix, ([row_of[c] for c in y_true], [column_of[c] for c in y_pred]), 1)
    return matrix, columns


def plot_confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: Path | str,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Draw the confusion matrix of a classification (rows: true, columns: predicted) to a PNG.

    Args:
        y_true: true class ids ``0..C-1``.
        y_pred: predicted class ids, or `UNKNOWN`.
        path: the PNG to write.
        class_names: names of the class ids (default: the ids).
        title: the figure's title.

    Returns:
        The matrix drawn (see `confusion_matrix`).
    """
    classes = sorted({int(c) for c in np.asarray(y_true)} | _known(y_pred))
    matrix, columns = confusion_matrix(y_true, y_pred, classes)
    names = [_name(c, class_names) for c in classes]
    figure, axis = _figure(max(4.0, 0.5 * len(columns) + 2))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, shrink=0.8)
    axis.set_xticks(range(len(columns)), [*names, UNKNOWN_NAME][: len(columns)], rotation=90)
    axis.set_yticks(range(len(classes)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 30:
        limit = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if count > limit else "black"
                axis.text(column, row, str(count), ha="center", va="center", color=colour)
    axis.set_title(title or f"confusion matrix ({int(matrix.sum())} queries)")
    _save(figure, path)
    return matrix


def plot_embedding_projection(
    embeddings: np.ndarray,
    labels: np.ndarray,
    path: Path | str,
    method: Literal["pca", "tsne"] = "pca",
    class_names: Sequence[str] | None = None,
    max_points: int = 3000,
    seed: int = 0,
    title: str | None = None,
) -> np.ndarray:
    """Project embeddings to 2-D (scikit-learn PCA or t-SNE) and draw them coloured by class.

    Args:
        embeddings: ``(N, D)`` vectors.
        labels: their class ids.
        path: the PNG to write.
        method: ``pca`` (fast, linear) or ``tsne`` (neighbourhoods, slower).
        class_names: names of the class ids (default: the ids).
        max_points: a random sample of at most this many points is drawn.
        seed: seeds the sample and t-SNE.
        title: the figure's title.

    Returns:
        The ``(n, 2)`` coordinates drawn (of the sample, in its order).

    Raises:
        ModelError: on an unknown method or fewer than 3 points.
    """
    embeddings, labels = np.asarray(embeddings, np.float32), np.asarray(labels)
    if method not in ("pca", "tsne"):
        raise ModelError(f"Unknown projection. Expected pca or tsne. Received: {method!r}")
    if len(embeddings) < 3:
        raise ModelError(f"Expected at least 3 embeddings to project. Received: {len(embeddings)}")
    rng = np.random.default_rng(seed)
    if len(embeddings) > max_points:
        keep = np.sort(rng.choice(len(embeddings), max_points, replace=False))
        embeddings, labels = embeddings[keep], labels[keep]
    points = _project(embeddings, method, seed)
    figure, axis = _figure(6.0)
    colours = _colours(len(np.unique(labels)))
    for colour, c in zip(colours, np.unique(labels), strict=True):
        members = labels == c
        axis.scatter(*points[members].T, s=6, color=colour, label=_name(int(c), class_names))
    if len(np.unique(labels)) <= 20:
        axis.legend(markerscale=3, fontsize="small", loc="best")
    axis.set_title(title or f"embeddings ({method.upper()}, {len(points)} points)")
    axis.set_xticks([])
    axis.set_yticks([])
    _save(figure, path)
    return points


def _project(embeddings: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(embeddings))
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(embeddings) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(embeddings))


def _known(y_pred: np.ndarray) -> set[int]:
    return {int(c) for c in np.asarray(y_pred) if c != UNKNOWN}


def _name(c: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def _figure(size: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size, size), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def _save(figure: Any, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
