"""Train an encoder: class-balanced batches, a metric-learning loss, early stopping on recall@1.

`train` is the whole recipe in one call::

    result = train(datasets.load_digits(), TrainConfig(epochs=10))
    result.encoder().embed(...)          # a runtime `Encoder`
    result.plot("curve.png")             # loss and validation recall per epoch
    result.summary()                     # JSON-ready run summary

Validation is *by class* by default: a share of the classes is held out and
never trained on, and each epoch `RetrievalCallback` measures leave-one-out
recall@1 on them, which is what a similarity model is for (finding neighbours
of classes it has not seen). Early stopping watches that metric and restores
the best epoch's weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from model import encoders
from model import losses as losses_module
from model.augment import augmentation_layers
from model.datasets import Dataset
from model.encoders.layers import L2Normalization
from model.evaluation.retrieval import retrieve
from model.evaluation.search import canonical_distance
from model.inputs import InputSpec
from model.registry import Encoder, code_version
from model.samplers import ClassBalancedSampler
from model.schedules import warmup_cosine
from model.synthetic_classes import check_transforms, with_synthetic_classes
from simstream.errors import ModelError
from simstream.log import get_logger

log = get_logger("model.training")

MONITOR = "val_recall@1"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (JSON-ready via `to_dict`).

    Attributes:
        encoder: encoder name or config dict (see `model.encoders.get`).
        embedding_dim: size of the embedding.
        loss: loss name or config dict (see `model.losses.get`).
        loss_config: extra loss arguments (e.g. ``{"lmda": 0.5}``).
        distance: distance of the loss and of retrieval.
        epochs: maximum epochs.
        seed: seeds weights, sampling, augmentation and the validation split.
        classes_per_batch: classes in each batch.
        examples_per_class: examples of each class in a batch.
        steps_per_epoch: batches per epoch; ``None``: about one pass over the data.
        learning_rate: Adam's peak learning rate (`model.schedules.WarmupCosineDecay`).
        warmup_epochs: epochs of linear learning-rate warm-up before the cosine
            decay (0: none; fractions allowed).
        validation_split: share held out for validation (0 disables validation
            and early stopping).
        validation_by: ``"class"`` (held-out classes are unseen in training) or
            ``"example"`` (a share of every class).
        patience: epochs without recall@1 improvement before stopping.
        augment_shift: largest random image shift in pixels (0: none).
        augment_rotation: largest random image rotation in degrees (0: none).
        augment_scale: largest random relative zoom of images (0: none).
        synthetic_classes: transforms (`model.synthetic_classes.TRANSFORMS`, e.g.
            ``("rot90", "rot270", "hflip")``) each of which turns every training
            class into one more class to tell apart; an epoch still counts the
            real examples. Training only: validation and serving see the real classes.
        serve_features: serve the L2-normalised features that feed the embedding
            layer instead of the embedding: the ``Dense`` embedding then acts as a
            projection head that only training sees (as in SimCLR), and the
            served vectors keep what the loss discards about the training
            classes, which transfers better to unseen ones. The served size is
            the encoder's feature width (e.g. the CNN's last filter count).
            Applies to new encoders; fine-tuning keeps ``initial``'s output.
        deterministic: ask TensorFlow for deterministic kernels.
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 a line per epoch).
    """

    encoder: str | dict[str, Any] = "cnn"
    embedding_dim: int = 64
    loss: str | dict[str, Any] = "multisimilarity"
    loss_config: dict[str, Any] = field(default_factory=dict)
    distance: str = "cosine"
    epochs: int = 10
    seed: int = 0
    classes_per_batch: int = 10
    examples_per_class: int = 8
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-3
    warmup_epochs: float = 0.0
    validation_split: float = 0.2
    validation_by: Literal["class", "example"] = "class"
    patience: int = 5
    augment_shift: int = 0
    augment_rotation: float = 0.0
    augment_scale: float = 0.0
    synthetic_classes: tuple[str, ...] = ()
    serve_features: bool = False
    deterministic: bool = True
    verbose: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "synthetic_classes", check_transforms(self.synthetic_classes))
        checks = [
            ("embedding_dim", self.embedding_dim >= 1, "≥ 1"),
            ("epochs", self.epochs >= 0, "≥ 0"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, "≥ 0"),
            ("validation_split", 0 <= self.validation_split < 1, "0 ≤ split < 1"),
            ("validation_by", self.validation_by in ("class", "example"), "class or example"),
            ("patience", self.patience >= 0, "≥ 0"),
            ("augment_shift", self.augment_shift >= 0, "≥ 0"),
            ("augment_rotation", self.augment_rotation >= 0, "≥ 0"),
            ("augment_scale", 0 <= self.augment_scale < 1, "0 ≤ scale < 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ModelError(
                    f"Invalid value for argument `{name}`. Expected {expected}. "
                    f"Received: {name}={getattr(self, name)!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)


@dataclass(eq=False)
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained Keras encoder (best epoch's weights when validated).
        input_spec: the spec the model takes (may differ from the data's for
            backbones).
        config: the run's config.
        history: metric name → value per epoch (``loss``, ``val_recall@1``…).
        best_epoch: 1-based epoch whose weights were kept (None without validation).
        train_seconds: wall time of ``fit``.
        train_images: training images processed by ``fit`` (epochs × steps × batch).
        trained: the network the loss was applied to: ``model`` itself, or with
            ``serve_features`` the encoder with its projection head.
        dataset: summary of the training data.
        validation: what was held out (classes, examples), or None.
    """

    model: keras.Model
    input_spec: InputSpec
    config: TrainConfig
    history: dict[str, list[float]]
    best_epoch: int | None
    train_seconds: float
    train_images: int
    dataset: dict[str, Any]
    validation: dict[str, Any] | None
    trained: keras.Model | None = None

    @property
    def images_per_second(self) -> float:
        """Training throughput of ``fit``: images per second of wall time."""
        return self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def epochs_run(self) -> int:
        """Epochs actually trained (fewer than configured after early stopping)."""
        return len(self.history.get("loss", []))

    def encoder(self, version: str = "unregistered") -> Encoder:
        """The trained model as a runtime `Encoder`."""
        return Encoder(
            self.model, self.input_spec, version, canonical_distance(self.config.distance)
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready run summary."""
        best = None
        if self.best_epoch is not None:
            best = {k: v[self.best_epoch - 1] for k, v in self.history.items() if v}
        return {
            "config": self.config.to_dict(),
            "dataset": self.dataset,
            "validation": self.validation,
            "input_spec": self.input_spec.to_dict(),
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best": best,
            "final": {k: v[-1] for k, v in self.history.items() if v},
            "history": self.history,
            "train_seconds": round(self.train_seconds, 3),
            "train_images_per_s": round(self.images_per_second, 1),
            "parameters": int(self.model.count_params()),
            "code_version": code_version(),
        }

    def model_config(self) -> dict[str, Any]:
        """What a registry's ``config.json`` records about this model."""
        return {
            "embedding_dim": int(self.model.output_shape[-1]),
            "distance": canonical_distance(self.config.distance),
            "encoder": encoders.serialize(encoders.get(self.config.encoder)),
            "loss": self.config.loss,
            "loss_config": self.config.loss_config,
            "dataset": self.dataset,
            "training": {
                "config": self.config.to_dict(),
                "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch,
                "train_seconds": round(self.train_seconds, 3),
            },
        }

    def plot(self, path: Path | str) -> Path:
        """Write the training curve (loss, validation retrieval) as a PNG."""
        return plot_history(self.history, path, self.best_epoch, title=self.dataset.get("name"))


class RetrievalCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Each epoch, embed a held-out set and log leave-one-out recall@k and MAP@R.

    Adds ``val_recall@k`` for each ``k`` and ``val_map@r`` to the epoch's logs,
    where `keras.callbacks.EarlyStopping` (listed after it) can monitor them.

    Args:
        x: held-out model inputs.
        y: their labels.
        ks: recall cut-offs.
        distance: distance of the search.
        batch_size: batch size of the embedding pass.
        encoder: the model that embeds (default: the model being trained), e.g.
            the served features of a model trained through a projection head.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        ks: Sequence[int] = (1,),
        distance: str = "cosine",
        batch_size: int = 512,
        encoder: keras.Model | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.x, self.y = x, np.asarray(y)
        self.ks = tuple(ks)
        self.distance = distance
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        model = self.encoder if self.encoder is not None else self.model
        embeddings = model.predict(self.x, batch_size=self.batch_size, verbose=0)
        report = retrieve(embeddings, self.y, ks=self.ks, distance=self.distance).report()
        values = {f"val_recall@{k}": report.micro[f"recall@{k}"] for k in self.ks}
        values["val_map@r"] = report.micro["map@r"]
        if logs is not None:
            logs.update(values)
        log.debug("training.validation", epoch=epoch + 1, **values)


def train(
    dataset: Dataset,
    config: TrainConfig | None = None,
    validation: Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial: Encoder | None = None,
) -> TrainResult:
    """Train an encoder on a labelled dataset.

    Args:
        dataset: raw training examples; converted with the encoder's input spec.
        config: the run's settings (defaults: `TrainConfig()`).
        validation: an explicit validation set; when None, one is split off
            ``dataset`` according to ``config.validation_split`` / ``validation_by``.
        callbacks: more Keras callbacks.
        initial: fine-tune a copy of this encoder (architecture, weights and
            input spec) instead of building a new one from ``config.encoder``,
            which then only describes it; ``initial`` itself is not modified.

    Returns:
        The trained model and its history, timings and summary.

    Raises:
        ModelError: on an invalid config or loss, or a dataset too small to split.
        SamplerError: when class-balanced batches cannot be formed.
    """
    config = config or TrainConfig()
    validation_by = "given" if validation is not None else config.validation_by
    keras.utils.set_random_seed(config.seed)
    if config.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if validation is None and config.validation_split > 0:
        dataset, validation = split_dataset(
            dataset, config.validation_split, config.validation_by, config.seed
        )
    if initial is None:
        model, spec = encoders.build(
            config.encoder, dataset.input_spec, config.embedding_dim, seed=config.seed
        )
    else:
        if initial.input_spec.kind != dataset.input_spec.kind:
            raise ModelError(
                f"Cannot fine-tune an encoder of {initial.input_spec.kind} inputs on "
                f"{dataset.input_spec.kind} data ({dataset.name})."
            )
        model, spec = keras.models.clone_model(initial.model), initial.input_spec
        model.set_weights(initial.model.get_weights())
    real = dataset
    dataset = with_synthetic_classes(dataset, config.synthetic_classes)
    x = spec.to_model_batch(dataset.x)
    classes_per_batch = config.classes_per_batch
    available = len(np.unique(dataset.y))
    if 0 < available < classes_per_batch:
        log.info("training.classes_per_batch", asked=classes_per_batch, using=available)
        classes_per_batch = available
    sampler = ClassBalancedSampler(
        x,
        dataset.y,
        classes_per_batch=classes_per_batch,
        examples_per_class=config.examples_per_class,
        steps_per_epoch=config.steps_per_epoch
        or max(1, len(real) // (classes_per_batch * config.examples_per_class)),
        seed=config.seed,
    )
    loss = _make_loss(config, dataset.num_classes)
    fit_model = training_model(model, loss, _augmentation(config, spec))
    # A fine-tuned `initial` encoder is served as it was saved (features or embedding).
    served = served_features(model) if config.serve_features and initial is None else model
    total_steps = max(1, config.epochs * len(sampler))
    schedule = warmup_cosine(
        config.learning_rate, total_steps, round(config.warmup_epochs * len(sampler))
    )
    fit_model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    all_callbacks: list[keras.callbacks.Callback] = []
    early: keras.callbacks.EarlyStopping | None = None
    if validation is not None:
        all_callbacks.append(
            RetrievalCallback(
                spec.to_model_batch(validation.x),
                validation.y,
                distance=canonical_distance(config.distance),
                encoder=served,
            )
        )
        early = keras.callbacks.EarlyStopping(
            monitor=MONITOR,
            mode="max",
            patience=config.patience,
            restore_best_weights=True,
            verbose=0,
        )
        all_callbacks.append(early)
    all_callbacks += list(callbacks)
    log.info(
        "training.start",
        dataset=dataset.name,
        examples=len(dataset),
        encoder=str(config.encoder),
        loss=str(config.loss),
        epochs=config.epochs,
        steps_per_epoch=len(sampler),
        batch_size=sampler.batch_size,
        fine_tune_from=None if initial is None else initial.version,
    )
    started = time.perf_counter()
    history: dict[str, list[float]] = {}
    if config.epochs:
        fit = fit_model.fit(
            sampler, epochs=config.epochs, callbacks=all_callbacks, verbose=config.verbose
        )
        history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    seconds = time.perf_counter() - started
    images = len(history.get("loss", [])) * len(sampler) * sampler.batch_size
    best_epoch = None
    if early is not None and history.get(MONITOR):
        best_epoch = int(np.argmax(history[MONITOR])) + 1
    log.info(
        "training.done",
        seconds=round(seconds, 2),
        epochs=len(history.get("loss", [])),
        best_epoch=best_epoch,
    )
    return TrainResult(
        model=served,
        trained=model,
        input_spec=spec,
        config=config,
        history=history,
        best_epoch=best_epoch,
        train_seconds=seconds,
        train_images=images,
        dataset=real.summary(),
        validation=None
        if validation is None
        else {
            "examples": len(validation),
            "classes": sorted(int(c) for c in np.unique(validation.y)),
            "by": validation_by,
        },
    )


def split_dataset(
    dataset: Dataset, share: float, by: Literal["class", "example"] = "class", seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split off a validation set: whole classes (``by="class"``) or a share of each class.

    Raises:
        ModelError: when either side would be empty or hold fewer than 2 classes
            (by class) or a class would lose all its training examples.
    """
    rng = np.random.default_rng([seed, 1])
    classes = np.unique(dataset.y)
    if by == "class":
        count = round(share * len(classes))
        if count < 2 or len(classes) - count < 2:
            raise ModelError(
                f"Cannot hold out {share:.0%} of {len(classes)} classes for validation: expected "
                "at least 2 classes on each side. Lower or raise validation_split, use "
                "validation_by='example', or set validation_split=0."
            )
        held = rng.choice(classes, size=count, replace=False)
        mask = np.isin(dataset.y, held)
    else:
        mask = np.zeros(len(dataset), bool)
        for c in classes:
            members = np.flatnonzero(dataset.y == c)
            take = round(share * len(members))
            if take >= len(members):
                raise ModelError(f"Class {c} has too few examples ({len(members)}) to split.")
            mask[rng.choice(members, size=take, replace=False)] = True
    return (
        dataset.subset(~mask, name=dataset.name),
        dataset.subset(mask, name=f"{dataset.name} (validation)"),
    )


def plot_history(
    history: dict[str, list[float]],
    path: Path | str,
    best_epoch: int | None = None,
    title: str | None = None,
) -> Path:
    """Plot loss and validation retrieval metrics per epoch into a PNG (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axis, metric_axis = figure.subplots(1, 2)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    if len(epochs):
        loss_axis.plot(epochs, history["loss"], marker="o", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("loss")
    for name, values in history.items():
        if name.startswith("val_"):
            metric_axis.plot(np.arange(1, len(values) + 1), values, marker="o", label=name[4:])
    if best_epoch is not None:
        metric_axis.axvline(best_epoch, color="grey", linestyle="--", label="best epoch")
    metric_axis.set_xlabel("epoch")
    metric_axis.set_title("validation retrieval (leave-one-out)")
    if metric_axis.get_legend_handles_labels()[0]:
        metric_axis.legend(loc="lower right")
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def training_model(
    model: keras.Model, loss: keras.losses.Loss, augmentation: keras.Layer | None = None
) -> keras.Model:
    """The model `fit` trains: augmentation layers, the encoder, and a loss's proxies.

    Augmentation runs inside the graph (only while training), and proxy-based
    losses own trainable proxies through a layer that must sit in the trained
    graph; the encoder itself (what is saved) shares every other weight.
    """
    if augmentation is None and not hasattr(loss, "proxies_layer"):
        return model
    inputs = keras.Input(model.input_shape[1:], name="training_input")
    outputs = model(augmentation(inputs) if augmentation is not None else inputs)
    if hasattr(loss, "proxies_layer"):
        outputs = loss.proxies_layer()(outputs)
    return keras.Model(inputs, outputs, name="training_model")


def served_features(model: keras.Model) -> keras.Model:
    """The encoder without its embedding layer: L2-normalised features, sharing weights.

    Raises:
        ModelError: when ``model`` has no embedding layer (it already serves features).
    """
    try:
        features = model.get_layer(encoders.EMBEDDING_LAYER).input
    except ValueError:
        raise ModelError(
            f"Cannot serve features of {model.name!r}: expected a layer named "
            f"{encoders.EMBEDDING_LAYER!r}. Received: an encoder without one"
        ) from None
    outputs = L2Normalization(name=encoders.NORMALIZATION_LAYER, dtype="float32")(features)
    return keras.Model(model.input, outputs, name=model.name)


def measure_step_limit(
    result: TrainResult, x: np.ndarray, y: np.ndarray, steps: int = 20, warmup: int = 3
) -> float:
    """Images/s of forward + backward + update alone, on a copy of the trained model.

    The same encoder, loss, optimizer and batch size as training, fed one batch
    held in memory (no sampling, no augmentation): the ceiling that training's
    `TrainResult.images_per_second` is read against. The trained weights are untouched.

    Args:
        result: the training run to measure.
        x: one batch of model inputs (the training batch size).
        y: its labels.
        steps: timed steps.
        warmup: untimed steps first (graph tracing, allocation).
    """
    trained = result.trained if result.trained is not None else result.model
    copy = keras.models.clone_model(trained)
    copy.set_weights(trained.get_weights())
    loss = _make_loss(result.config, int(result.dataset["classes"]))
    step_model = training_model(copy, loss)
    step_model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    for _ in range(warmup):
        step_model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        step_model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - started)


def _augmentation(config: TrainConfig, spec: InputSpec) -> keras.Layer | None:
    if spec.kind != "image":
        return None
    return augmentation_layers(
        config.augment_shift,
        config.augment_rotation,
        config.augment_scale,
        seed=config.seed,
    )


def _make_loss(config: TrainConfig, num_classes: int) -> keras.losses.Loss:
    """Resolve the loss, giving it the distance and, when it needs them, the sizes.

    Stateful losses (proxy-based, cross-batch memory) need ``num_classes`` and
    ``embedding_dim``; stateless ones refuse them. The fewest injected arguments
    that construct the loss win; ``loss_config`` always applies.
    """
    if not isinstance(config.loss, str):
        return losses_module.get(dict(config.loss))
    injected = {
        "distance": config.distance,
        "embedding_dim": config.embedding_dim,
        "num_classes": num_classes,
    }
    attempts = (("distance",), ("distance", "embedding_dim"), tuple(injected))
    first_error: ModelError | None = None
    for names in attempts:
        kwargs = {k: injected[k] for k in names if k not in config.loss_config}
        try:
            return losses_module.get(config.loss, **kwargs, **config.loss_config)
        except ModelError as e:
            first_error = first_error or e
    assert first_error is not None
    raise first_error
