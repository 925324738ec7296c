from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.model import BENCHMARK_CONFIG, run_mnist_benchmark, split_per_class
from tests.model.conftest import MNIST_DIR

needs_mnist = pytest.mark.skipif(
    not MNIST_DIR.is_dir() and os.environ.get("CI") != "true", reason="the MNIST test set is absent"
)


def test_a_per_class_split_takes_the_share_of_every_class_and_keeps_the_rest() -> None:
    labels = np.array([0] * 10 + [1] * 4)
    first, rest = split_per_class(labels, 0.7, seed=0)
    assert np.bincount(labels[first]).tolist() == [7, 3]
    assert np.bincount(labels[rest]).tolist() == [3, 1]
    assert sorted(np.concatenate([first, rest]).tolist()) == list(range(14))
    again, _ = split_per_class(labels, 0.7, seed=0)
    np.testing.assert_array_equal(first, again)


@needs_mnist
def test_the_benchmark_writes_seen_unseen_calibration_and_a_plot(tmp_path: Path) -> None:
    tiny = replace(
        BENCHMARK_CONFIG,
        encoder={"name": "cnn", "filters": [8, 16], "convs_per_block": 1},
        embedding_dim=16,
        epochs=1,
        steps_per_epoch=2,
        verbose=0,
    )
    out = tmp_path / "model.json"
    report = run_mnist_benchmark(MNIST_DIR, out, tiny)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    for part in ("seen", "unseen"):
        assert {"recall@1", "recall@5", "map@r", "queries"} <= set(saved[part])
    assert saved["seen"]["queries"] + saved["unseen"]["queries"] == 3001
    assert {"threshold", "precision", "recall", "f1"} <= set(saved["calibration"])
    assert saved["train_seconds"] > 0 and saved["protocol"]["train_examples"] == 4220
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@needs_mnist
def test_the_benchmark_meets_its_targets(tmp_path: Path) -> None:
    report = run_mnist_benchmark(
        MNIST_DIR, tmp_path / "model.json", replace(BENCHMARK_CONFIG, verbose=0)
    )
    assert report["seen"]["recall@1"] >= 0.98
    assert report["unseen"]["recall@1"] >= 0.93
    assert report["calibration"]["f1"] >= 0.97
    assert report["train_seconds"] < 300
