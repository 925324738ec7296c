from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from model.evaluation import UNKNOWN
from model.evaluation.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_embedding_projection,
)
from simstream.errors import ModelError

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_confusion_matrix_counts_every_query_once_with_an_unknown_column() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, UNKNOWN, 2, 2, 0])

    matrix, columns = confusion_matrix(y_true, y_pred, [0, 1, 2])

    assert columns == [0, 1, 2, UNKNOWN]
    np.testing.assert_array_equal(matrix, [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 2, 0]])


def test_the_confusion_matrix_plot_writes_a_png_of_all_queries(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.8, y_true, rng.integers(-1, 5, 200))

    matrix = plot_confusion_matrix(y_true, y_pred, tmp_path / "cm.png", class_names=list("abcde"))

    assert matrix.sum() == 200
    assert np.trace(matrix) == np.sum(y_true == y_pred)
    assert (tmp_path / "cm.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_the_projection_plot_draws_every_point_and_separates_distinct_classes(
    tmp_path: Path, method: Literal["pca", "tsne"]
) -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16)) * 10
    labels = np.repeat(np.arange(3), 20)
    embeddings = centres[labels] + rng.normal(size=(60, 16))

    points = plot_embedding_projection(embeddings, labels, tmp_path / "p.png", method=method)

    assert points.shape == (60, 2)
    assert (tmp_path / "p.png").stat().st_size > 1000
    means = np.array([points[labels == c].mean(axis=0) for c in range(3)])
    spread = max(points[labels == c].std(axis=0).max() for c in range(3))
    assert min(np.linalg.norm(means[i] - means[j]) for i, j in ((0, 1), (0, 2), (1, 2))) > spread


def test_a_prediction_outside_the_classes_or_an_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="Expected labels among"):
        confusion_matrix(np.array([0, 1]), np.array([0, 7]), [0, 1])
    with pytest.raises(ModelError, match="pca or tsne"):
        plot_embedding_projection(np.zeros((5, 2)), np.zeros(5), tmp_path / "x.png", "umap")  # type: ignore[arg-type]
