"""The contrastive training model, `train_ssl` and the labelled k-NN evaluation.

The training model wraps the encoder (what is kept and served)::

    x ─ augment ─ encoder ─ projector ─ z1 ┐
      └ augment ─ encoder ─ projector ─ z2 ┴ concat → the method's loss

SimSiam adds a predictor and outputs ``[p1, p2, z1, z2]``. Labels are never
read: it trains with ``model.fit`` on unlabelled inputs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import keras
import numpy as np

from model import encoders
from model.callbacks import RetrievalLogger
from model.datasets import Dataset
from model.evaluation.retrieval import retrieve
from model.evaluation.search import canonical_distance
from model.inputs import InputSpec
from model.registry import Encoder
from model.schedules import warmup_cosine
from model.ssl import losses as ssl_losses
from model.ssl.augment import augmenter
from model.training import TrainConfig, TrainResult, split_dataset
from simstream.errors import ModelError
from simstream.log import get_logger

log = get_logger("model.ssl")


def _mlp(width: int, out: int, name: str) -> keras.Sequential:
    layers = keras.layers
    return keras.Sequential(
        [layers.Dense(width), layers.BatchNormalization(), layers.ReLU(), layers.Dense(out)],
        name=name,
    )


def build_contrastive_model(
    encoder: keras.Model,
    spec: InputSpec,
    method: str,
    projection_dim: int = 64,
    seed: int | None = None,
) -> keras.Model:
    """The two-view training model around ``encoder`` (shared weights).

    Args:
        encoder: the embedding model (trained in place).
        spec: its input spec (chooses the augmentation).
        method: ``simclr``, ``barlowtwins``, ``vicreg`` or ``simsiam``.
        projection_dim: width and output size of the projector (and predictor).
        seed: seeds the augmentation.

    Returns:
        A model from inputs to the concatenated views the method's loss takes.
    """
    method = ssl_losses.canonical(method)
    inputs = keras.Input(spec.shape)
    augment = augmenter(spec, seed)
    projector = _mlp(projection_dim, projection_dim, "projector")
    projections = [projector(encoder(augment(inputs))) for _ in range(2)]
    outputs = projections
    if method == "simsiam":
        predictor = _mlp(max(projection_dim // 2, 1), projection_dim, "predictor")
        outputs = [predictor(z) for z in projections] + projections
    return keras.Model(inputs, keras.layers.Concatenate()(outputs), name=f"ssl_{method}")


def train_ssl(
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    method: str = "simclr",
    initial: Encoder | None = None,
    batch_size: int = 256,
    projection_dim: int = 64,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Self-supervised training of an encoder on the inputs of ``dataset`` (labels unused).

    Args:
        dataset: raw examples (their labels, if any, are ignored).
        method: ``simclr``, ``barlowtwins``, ``vicreg`` or ``simsiam``.
        config: encoder, embedding size, distance, epochs, seed, learning rate
            (warm-up and cosine decay) and the validation split (held out of training,
            recorded for a labelled evaluation as `train` does); the sampler
            and loss fields are unused.
        initial: continue from a copy of this encoder instead of a new one.
        batch_size: examples per batch (SimCLR's negatives are the batch's other views).
        projection_dim: size of the projector.
        callbacks: more Keras callbacks; a `RetrievalLogger` without an encoder
            is given this one (not the two-view training model).

    Returns:
        The trained encoder as a `TrainResult` (``history["loss"]``; no early stopping).
    """
    config = config or TrainConfig()
    method = ssl_losses.canonical(method)
    validation = None
    if config.validation_split > 0:
        dataset, held = split_dataset(
            dataset, config.validation_split, config.validation_by, config.seed
        )
        validation = {
            "examples": len(held),
            "classes": sorted(int(c) for c in np.unique(held.y)),
            "by": config.validation_by,
        }
    if len(dataset) < 2:
        raise ModelError(f"Expected at least 2 examples for {method}. Received: {len(dataset)}")
    keras.utils.set_random_seed(config.seed)
    if initial is None:
        model, spec = encoders.build(
            config.encoder, dataset.input_spec, config.embedding_dim, seed=config.seed
        )
    else:
        model, spec = keras.models.clone_model(initial.model), initial.input_spec
        model.set_weights(initial.model.get_weights())
    x = spec.to_model_batch(dataset.x)
    batch = min(batch_size, len(x))
    trainer = build_contrastive_model(model, spec, method, projection_dim, seed=config.seed)
    steps_per_epoch = len(x) // batch
    schedule = warmup_cosine(
        config.learning_rate,
        config.epochs * steps_per_epoch,
        round(config.warmup_epochs * steps_per_epoch),
    )
    trainer.compile(optimizer=keras.optimizers.Adam(schedule), loss=ssl_losses.get(method))
    for callback in callbacks:
        if isinstance(callback, RetrievalLogger) and callback.encoder is None:
            callback.encoder = model
    log.info("ssl.start", method=method, examples=len(x), epochs=config.epochs, batch=batch)
    started = time.perf_counter()
    history: dict[str, list[float]] = {}
    if config.epochs:
        fit = trainer.fit(
            x,
            np.zeros((len(x), 1), np.float32),
            batch_size=batch,
            epochs=config.epochs,
            shuffle=True,
            callbacks=list(callbacks),
            verbose=config.verbose,
        )
        history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    seconds = time.perf_counter() - started
    log.info("ssl.done", method=method, seconds=round(seconds, 2))
    return TrainResult(
        model=model,
        input_spec=spec,
        config=config,
        history=history,
        best_epoch=None,
        train_seconds=seconds,
        train_images=config.epochs * len(x),
        dataset={**dataset.summary(), "self_supervised": method},
        validation=validation,
    )


def knn_recall(encoder: Encoder, labelled: Dataset, k: int = 1) -> float:
    """Leave-one-out recall@k of ``encoder`` on labelled raw examples (exact search)."""
    vectors = encoder.embed(encoder.input_spec.to_model_batch(labelled.x))
    results = retrieve(vectors, labelled.y, ks=(k,), distance=canonical_distance(encoder.distance))
    return float(results.report().micro[f"recall@{k}"])
