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


def test_the_steady_rate_leaves_out_the_pipelines_fill_and_drain() -> None:
    from bench.ingest import steady_rate

    # 1 s before the first record lands, 100 records/s from 10 to 90, then a slow tail.
    samples = [(0.0, 0), (1.0, 0), (1.1, 10), (1.5, 50), (1.9, 90), (3.0, 95), (4.0, 100)]

    assert steady_rate(samples, 100) == pytest.approx(100.0)
    assert steady_rate(samples, 100, low=0.5, high=0.9) == pytest.approx(100.0)
    assert steady_rate(samples, 100, low=0.9, high=1.0) == pytest.approx(10 / 2.1)


def test_a_steady_rate_needs_samples_across_the_range() -> None:
    from bench.ingest import steady_rate

    with pytest.raises(ValueError, match="from 10% to 90% of 100"):
        steady_rate([(0.0, 0), (1.0, 50)], 100)
    with pytest.raises(ValueError):
        steady_rate([(0.0, 0), (1.0, 95)], 100)  # 10 % and 90 % reached at the same sample
