"""`RetrievalLogger` writes held-out recall@k and MAP@R per epoch to TensorBoard and the History."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from model.callbacks import RetrievalLogger
from model.datasets import Dataset
from model.training import train
from tests.model.conftest import FAST


def _events(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def test_each_epoch_writes_the_retrieval_metrics_as_tensorboard_scalars(
    digits: Dataset, tmp_path: Path
) -> None:
    held = digits.subset(np.arange(0, len(digits), 6))
    logger = RetrievalLogger(
        held.input_spec.to_model_batch(held.x), held.y, ks=(1, 5), log_dir=tmp_path
    )

    result = train(digits, FAST, callbacks=[logger])

    events = _events(tmp_path)
    assert {"retrieval/recall@1", "retrieval/recall@5", "retrieval/map@r"} <= set(events)
    assert "optimizer/learning_rate" in events
    for name in ("recall@1", "recall@5", "map@r"):
        steps = [step for step, _ in events[f"retrieval/{name}"]]
        values = [value for _, value in events[f"retrieval/{name}"]]
        assert steps == [0, 1]
        np.testing.assert_allclose(values, result.history[f"heldout_{name}"], rtol=1e-6)
    recall = result.history["heldout_recall@1"]
    assert all(0 < r <= 1 for r in recall)
    assert result.history["heldout_recall@5"][-1] >= recall[-1]


def test_without_a_log_dir_the_metrics_go_to_the_history_only(
    digits: Dataset, tmp_path: Path
) -> None:
    held = digits.subset(np.arange(0, len(digits), 6))
    logger = RetrievalLogger(held.input_spec.to_model_batch(held.x), held.y, ks=(1,))

    result = train(digits, FAST, callbacks=[logger])

    assert len(result.history["heldout_recall@1"]) == len(result.history["heldout_map@r"]) == 2
    assert not list(tmp_path.iterdir())
