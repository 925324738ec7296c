"""`RetrievalLogger`: retrieval metrics of a held-out set per epoch, to TensorBoard and the History.

Each epoch it embeds the held-out examples with the encoder and measures
leave-one-out recall@k and MAP@R (exact search, `model.evaluation.retrieve`).
The values go into the epoch's logs (so into ``History`` and any later
callback) as ``heldout_recall@k`` and ``heldout_map@r`` on every backend; with
TensorFlow as the backend and a ``log_dir``, they are also written with
``tf.summary`` as ``retrieval/recall@k`` and ``retrieval/map@r`` (step = epoch),
with the learning rate as ``optimizer/learning_rate``::

    tensorboard --logdir DIR
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from model.evaluation.retrieval import retrieve
from model.training import RetrievalCallback
from simstream.log import get_logger

log = get_logger("model.callbacks")

PREFIX = "heldout_"
"""Prefix of the metric names in the epoch's logs."""

TAG_PREFIX = "retrieval/"
"""Prefix of the TensorBoard tags."""


class RetrievalLogger(RetrievalCallback):
    """Log held-out retrieval metrics each epoch (see the module docstring).

    Args:
        x: held-out model inputs (already converted with the encoder's input spec).
        y: their labels.
        ks: recall cut-offs.
        distance: distance of the search.
        log_dir: where TensorBoard event files go (TensorFlow backend only);
            ``None``: the History only.
        encoder: the model that embeds; ``None``: the model being fitted (give
            the encoder when a wrapper is fitted, e.g. a self-supervised one).
        batch_size: batch size of the embedding pass.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        ks: Sequence[int] = (1, 5),
        distance: str = "cosine",
        log_dir: Path | str | None = None,
        encoder: keras.Model | None = None,
        batch_size: int = 512,
    ) -> None:
        super().__init__(x, y, ks, distance, batch_size)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.encoder = encoder
        self._writer: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.log_dir is not None and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = self.measure()
        if logs is not None:
            logs.update({PREFIX + name: value for name, value in values.items()})
        if self._writer is not None:
            self._write(epoch, values)
        log.debug("training.heldout_retrieval", epoch=epoch + 1, **values)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def measure(self) -> dict[str, float]:
        """Recall@k and MAP@R of the held-out set with the current weights."""
        model = self.encoder if self.encoder is not None else self.model
        embeddings = model.predict(self.x, batch_size=self.batch_size, verbose=0)
        report = retrieve(embeddings, self.y, ks=self.ks, distance=self.distance).report()
        values = {f"recall@{k}": report.micro[f"recall@{k}"] for k in self.ks}
        values["map@r"] = report.micro["map@r"]
        return values

    def _write(self, epoch: int, values: dict[str, float]) -> None:
        scalars = {TAG_PREFIX + name: value for name, value in values.items()}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            scalars["optimizer/learning_rate"] = float(np.asarray(optimizer.learning_rate))
        with self._writer.as_default(step=epoch):
            for tag, value in scalars.items():
                write_scalar(tag, value)
        self._writer.flush()


def write_scalar(tag: str, value: float) -> None:
    """Write a TensorBoard scalar to the default ``tf.summary`` writer at its default step.

    What ``tf.summary.scalar`` writes (a float32 tensor tagged for the
    ``scalars`` plugin), without needing the ``tensorboard`` package installed.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=metadata.SerializeToString())
