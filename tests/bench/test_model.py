from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.model import BENCHMARK_CONFIG, run_mnist_benchmark, run_model_benchmark, split_per_class
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


TINY = replace(
    BENCHMARK_CONFIG,
    encoder={"name": "cnn", "filters": [8, 16], "convs_per_block": 1},
    embedding_dim=16,
    epochs=1,
    steps_per_epoch=2,
    verbose=0,
)


def test_a_tiny_digits_run_writes_baselines_open_set_few_shot_and_speed(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    report = run_model_benchmark(out, "digits", config=TINY, seeds=(0, 1))
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["protocol"]["data"] == "digits" and saved["seeds"] == [0, 1]
    for part in ("seen", "unseen"):
        assert {"recall@1", "recall@5", "map@r", "queries"} <= set(saved[part])
    assert (
        saved["seen"]["queries"] + saved["unseen"]["queries"] == saved["protocol"]["index_examples"]
    )
    assert {"threshold", "precision", "recall", "f1"} <= set(saved["calibration"])
    for name in ("raw_pixels", "pca64"):
        baseline = saved["baselines"][name]
        # Raw pixels find most digits' neighbours; the tiny model is no better than chance-ish.
        assert 0.5 < baseline["unseen"]["recall@1"] <= 1 and 0 < baseline["unseen"]["map@r"] <= 1
        assert 0.5 < baseline["open_set"]["auroc"] <= 1
    for figures in (saved, saved["baselines"]["raw_pixels"]):
        open_set = figures["open_set"]
        assert 0 <= open_set["auroc"] <= 1 and 0 <= open_set["f1"] <= 1
        assert open_set["unknown"] == saved["unseen"]["queries"]
        assert open_set["known"] == saved["seen"]["queries"]
        assert set(figures["few_shot"]) == {"1", "5", "10", "50"}
        assert all(0 <= a <= 1 for a in figures["few_shot"].values())
        by_classifier = figures["few_shot_by_classifier"]
        names = {"nearest", "majority@10", "class_mean", "centroid@10", "centroid@50"}
        assert set(by_classifier) == names
        assert by_classifier["centroid@50"] == figures["few_shot"]
        assert all(set(curve) == {"1", "5", "10", "50"} for curve in by_classifier.values())
        known = figures["few_shot_known_by_classifier"]
        assert set(known) == names
        assert all(set(curve) == {"1", "5", "10", "50"} for curve in known.values())
        assert all(0 <= a <= 1 for curve in known.values() for a in curve.values())
    # Raw pixels tell the seen digits apart (leave-one-out), new classes indexed or not.
    assert (
        min(saved["baselines"]["raw_pixels"]["few_shot_known_by_classifier"]["nearest"].values())
        > 0.9
    )
    assert saved["train_seconds"] > 0
    assert saved["train_images_per_s"] > 0 and saved["train_limit_images_per_s"] > 0
    assert saved["train_speed_ratio"] == pytest.approx(
        saved["train_images_per_s"] / saved["train_limit_images_per_s"], abs=2e-3
    )
    assert [run["seed"] for run in saved["per_seed"]] == [0, 1]
    recalls = [run["unseen.recall@1"] for run in saved["per_seed"]]
    summary = saved["summary"]["unseen.recall@1"]
    assert summary["mean"] == pytest.approx(np.mean(recalls), abs=1e-4)
    assert summary["min"] == min(recalls) and summary["max"] == max(recalls)
    assert {
        "few_shot_by_classifier.class_mean.5",
        "few_shot_by_classifier.majority@10.5",
        "few_shot_by_classifier.centroid@50.5",
        "few_shot_known_by_classifier.centroid@50.5",
    } <= set(saved["summary"])
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@needs_mnist
def test_the_benchmark_meets_its_targets(tmp_path: Path) -> None:
    report = run_mnist_benchmark(
        MNIST_DIR, tmp_path / "model.json", replace(BENCHMARK_CONFIG, verbose=0)
    )
    # Trained on the seen classes' 70 % only; the other 30 % of every class is indexed.
    assert report["protocol"]["train_examples"] == 4220
    assert report["seen"]["queries"] + report["unseen"]["queries"] == 3001
    raw = report["baselines"]["raw_pixels"]
    assert 1 - report["unseen"]["recall@1"] <= (1 - raw["unseen"]["recall@1"]) / 2
    assert report["unseen"]["map@r"] >= 0.50
    assert report["open_set"]["auroc"] >= 0.90
    assert report["train_seconds"] < 300
    assert report["seen"]["recall@1"] >= 0.99
    assert report["unseen"]["recall@1"] >= 0.97
    # Five examples of a new class, classified by `/v1/classify` with vote centroid and
    # k = 50; the default vote (the nearest neighbour) stays behind (0.79–0.80 over seeds,
    # held to that).
    assert report["protocol"]["few_shot_classifier"] == {"vote": "centroid", "k": 50}
    assert report["few_shot"]["5"] >= 0.90
    nearest = report["few_shot_by_classifier"]["nearest"]["5"]
    assert nearest >= max(0.75, 2 * raw["few_shot_by_classifier"]["nearest"]["5"])
    # What the new classes cost the seen ones: next to nothing under 1-NN, about a
    # point under the centroid vote (0.983–0.990 over seeds).
    assert report["few_shot_known_by_classifier"]["nearest"]["5"] >= 0.99
    assert report["few_shot_known_by_classifier"]["centroid@50"]["5"] >= 0.98
