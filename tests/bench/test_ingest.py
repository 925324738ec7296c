from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.ingest import _images, run
from simstream.errors import DatasetError

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def test_an_unknown_dataset_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"\['digits', 'mnist'\]"):
        run(tmp_path / "ingest.json", dataset="cifar")


def test_the_digits_dataset_is_8_by_8_images_repeated_to_the_item_count() -> None:
    images, labels, train_set = _images("digits", 2000, None)
    assert images.shape == (2000, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (2000,)
    assert len(train_set) == 1797


@pytest.mark.skipif(
    not MNIST.is_dir() and os.environ.get("CI") != "true",
    reason="the shared MNIST folder is absent",
)
def test_the_mnist_dataset_is_28_by_28_test_images_with_a_small_training_set() -> None:
    images, labels, train_set = _images("mnist", 12_000, MNIST)
    assert images.shape == (12_000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[10_000], images[0])
    assert set(np.unique(labels)) == set(range(10))
    assert len(train_set) == 2000
