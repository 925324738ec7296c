"""The MNIST benchmark: how well an encoder retrieves classes it was and was not trained on.

Protocol (``simstream bench model``), on the MNIST test set (10,000 images):

1. Split every class 70 % / 30 % at random (seeded).
2. Train on the 70 % of classes 0–5 only (the *seen* classes), for a fixed
   number of epochs (`BENCHMARK_CONFIG`: no validation split, since held-out
   seen classes would cost training data and unseen ones must stay unseen).
3. Index the 30 % of all ten classes (≈ 3,000 images; classes 6–9 are *unseen*).
4. Leave-one-out: every indexed image queries the rest of the index, exactly.
5. Report recall@k, precision@k, MAP@R and R-precision over seen and unseen
   queries, and calibrate a distance threshold on the unseen queries'
   (query → nearest neighbour) pairs for the best F1 (see
   `model.evaluation.calibration`). The threshold chosen on *seen* queries and
   applied to unseen ones is reported too, as ``calibration_transfer``: that is
   what a deployment that calibrates on known classes would get.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_json
from model.datasets import Dataset, load_mnist
from model.evaluation.calibration import calibrate, threshold_metrics
from model.evaluation.classification import UNKNOWN, classification_report
from model.evaluation.retrieval import QueryResults, retrieve, split_by_class
from model.training import TrainConfig, TrainResult, train
from simstream.log import get_logger

log = get_logger("bench.model")

SEEN_CLASSES = (0, 1, 2, 3, 4, 5)
TRAIN_SHARE = 0.7
KS = (1, 5, 10)

BENCHMARK_CONFIG = TrainConfig(
    encoder={"name": "cnn", "filters": [32, 64, 128], "convs_per_block": 2, "pooling": "gem"},
    embedding_dim=64,
    loss="multisimilarity",
    distance="cosine",
    epochs=16,
    seed=0,
    classes_per_batch=6,
    examples_per_class=16,
    learning_rate=2e-3,
    validation_split=0.0,
    augment_shift=2,
    augment_rotation=15.0,
    augment_scale=0.15,
    verbose=2,
)
"""The configuration measured in ``docs/benchmarks.md``."""


def split_per_class(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(first, rest)``: a random ``share`` of every class, and the remainder."""
    rng = np.random.default_rng(seed)
    first, rest = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = round(share * len(members))
        first.append(members[:cut])
        rest.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


def run_mnist_benchmark(
    mnist_dir: Path | str | None,
    out: Path | str,
    config: TrainConfig = BENCHMARK_CONFIG,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark, write ``out`` (JSON) and a PNG next to it, return the results.

    Args:
        mnist_dir: directory of MNIST IDX files; its test split is used when
            present, else whatever split it holds (``None``: ``keras.datasets``).
        out: path of the JSON file; the plot is written to ``out`` with ``.png``.
        config: the training configuration.
        seed: overrides ``config.seed`` and seeds the split.
    """
    if seed is not None:
        config = replace(config, seed=seed)
    data = _load(mnist_dir)
    train_idx, index_idx = split_per_class(data.y, TRAIN_SHARE, config.seed)
    seen_train = train_idx[np.isin(data.y[train_idx], SEEN_CLASSES)]
    train_set = data.subset(seen_train, name=f"{data.name} classes 0-5, 70%")
    index_set = data.subset(index_idx, name=f"{data.name} all classes, 30%")
    log.info("bench.model_split", train=len(train_set), index=len(index_set))

    result = train(train_set, config)
    encoder = result.encoder()
    started = time.perf_counter()
    embeddings = encoder.embed(result.input_spec.to_model_batch(index_set.x))
    embed_seconds = time.perf_counter() - started
    results = retrieve(embeddings, index_set.y, ks=KS, distance=encoder.distance)
    seen_mask, unseen_mask = split_by_class(index_set.y, SEEN_CLASSES)
    seen, unseen = results.subset(seen_mask), results.subset(unseen_mask)

    unseen_calibration = calibrate(unseen.nearest_distance, unseen.matches)
    seen_calibration = calibrate(seen.nearest_distance, seen.matches)
    transfer = threshold_metrics(
        unseen.nearest_distance, unseen.matches, seen_calibration.threshold
    )
    report = {
        "benchmark": "mnist",
        "protocol": {
            "data": data.name,
            "seen_classes": list(SEEN_CLASSES),
            "unseen_classes": sorted(set(range(10)) - set(SEEN_CLASSES)),
            "train_share": TRAIN_SHARE,
            "train_examples": len(train_set),
            "index_examples": len(index_set),
            "queries": "leave-one-out over the index, exact search",
            "distance": encoder.distance,
        },
        "seen": _metrics(seen),
        "unseen": _metrics(unseen),
        "all": _metrics(results),
        "calibration": {**unseen_calibration.to_dict(), "on": "unseen queries, best F1"},
        "calibration_seen": {**seen_calibration.to_dict(), "on": "seen queries, best F1"},
        "calibration_transfer": {
            **transfer.to_dict(),
            "on": "unseen queries, threshold calibrated on seen queries",
        },
        "classification_unseen": _classification(unseen, unseen_calibration.threshold),
        "train_seconds": round(result.train_seconds, 2),
        "embed_seconds": round(embed_seconds, 3),
        "epochs_run": result.epochs_run,
        "parameters": int(result.model.count_params()),
        "config": config.to_dict(),
        "code_version": result.summary()["code_version"],
    }
    out = write_json(out, report)
    plot_benchmark(result, unseen, unseen_calibration.threshold, out.with_suffix(".png"))
    log.info(
        "bench.model_done",
        out=str(out),
        seen_recall_at_1=report["seen"]["recall@1"],
        unseen_recall_at_1=report["unseen"]["recall@1"],
        unseen_f1=report["calibration"]["f1"],
        train_seconds=report["train_seconds"],
    )
    return report


def plot_benchmark(result: TrainResult, unseen: QueryResults, threshold: float, path: Path) -> Path:
    """Training loss, and the unseen queries' nearest-neighbour distances by match."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axis, distance_axis = figure.subplots(1, 2)
    losses = result.history.get("loss", [])
    loss_axis.plot(np.arange(1, len(losses) + 1), losses, marker="o")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    loss_axis.set_title(f"{result.config.loss} loss, training on classes 0–5")
    bins = np.linspace(0, max(float(unseen.nearest_distance.max()), threshold) * 1.05, 40)
    distance_axis.hist(
        unseen.nearest_distance[unseen.matches], bins=bins, alpha=0.7, label="same class"
    )
    distance_axis.hist(
        unseen.nearest_distance[~unseen.matches], bins=bins, alpha=0.7, label="other class"
    )
    distance_axis.axvline(threshold, color="black", linestyle="--", label="best-F1 threshold")
    distance_axis.set_yscale("log")
    distance_axis.set_xlabel("distance to nearest neighbour")
    distance_axis.set_title("unseen classes 6–9: query → nearest neighbour")
    distance_axis.legend()
    figure.savefig(path, dpi=110)
    return path


def _load(mnist_dir: Path | str | None) -> Dataset:
    if mnist_dir is None:
        return load_mnist(None, split="test")
    try:
        return load_mnist(mnist_dir, split="test")
    except Exception:  # a directory without the test split: use what it holds
        return load_mnist(mnist_dir, split="all")


def _metrics(results: QueryResults) -> dict[str, Any]:
    report = results.report()
    return {
        **{k: round(v, 4) for k, v in report.micro.items()},
        "macro": {k: round(v, 4) for k, v in report.macro.items()},
        "queries": report.queries,
    }


def _classification(results: QueryResults, threshold: float) -> dict[str, Any]:
    """Leave-one-out nearest-neighbour classification with "unknown" beyond ``threshold``."""
    predictions = np.where(results.nearest_distance <= threshold, results.nearest_label, UNKNOWN)
    return classification_report(results.labels, predictions).to_dict()
