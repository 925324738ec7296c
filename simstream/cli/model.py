"""`simstream train`, `evaluate` and `models …`: the model's commands.

TensorFlow is imported inside each command, so ``simstream --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from simstream.cli.common import (
    MnistDirOption,
    exit_on_error,
    load_settings,
    metrics_row,
    metrics_table,
    progress_wanted,
)
from simstream.errors import ModelError

if TYPE_CHECKING:
    from model.datasets import Dataset
    from model.registry import Encoder

models_app = typer.Typer(
    help="List, inspect, promote and roll back registered encoder versions.",
    no_args_is_help=True,
)

RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Model registry directory (default: DATA_DIR/models)."),
]


def register(app: typer.Typer) -> None:
    """Add the model commands to the CLI."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.add_typer(models_app, name="models")


# --- train -------------------------------------------------------------------------


def train(
    dataset: Annotated[
        str | None,
        typer.Option(
            help="digits, mnist, npz:PATH or folder:PATH (default: SIMSTREAM_MODEL_DATASET)."
        ),
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help="Loss name (default: SIMSTREAM_MODEL_LOSS).")
    ] = None,
    loss_config: Annotated[
        str, typer.Option(help='Extra loss arguments as a JSON object, e.g. {"lmda": 0.5}.')
    ] = "{}",
    encoder: Annotated[
        str | None,
        typer.Option(
            help='cnn, mlp, backbone, or a JSON config like {"name": "cnn", "filters": [32, 64]} '
            "(default: SIMSTREAM_MODEL_ENCODER)."
        ),
    ] = None,
    embedding_dim: Annotated[
        int | None,
        typer.Option(min=1, help="Embedding size (default: SIMSTREAM_MODEL_EMBEDDING_DIM)."),
    ] = None,
    distance: Annotated[
        str | None, typer.Option(help="Distance (default: SIMSTREAM_MODEL_DISTANCE).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=0, help="Maximum epochs (default: SIMSTREAM_MODEL_EPOCHS).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: SIMSTREAM_MODEL_SEED).")
    ] = None,
    classes_per_batch: Annotated[int, typer.Option(min=1, help="Classes in each batch.")] = 10,
    examples_per_class: Annotated[
        int, typer.Option(min=1, help="Examples of each class per batch.")
    ] = 8,
    steps_per_epoch: Annotated[
        int | None, typer.Option(min=1, help="Batches per epoch (default: one pass).")
    ] = None,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    validation_split: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.99, help="Share of classes held out for early stopping (0: none)."
        ),
    ] = 0.2,
    validation_by: Annotated[
        str, typer.Option(help="Hold out whole classes (class) or a share of each (example).")
    ] = "class",
    patience: Annotated[int, typer.Option(min=0, help="Early-stopping patience in epochs.")] = 5,
    augment_shift: Annotated[int, typer.Option(min=0, help="Random image shift in pixels.")] = 0,
    warmup_epochs: Annotated[
        float, typer.Option(min=0.0, help="Epochs of learning-rate warm-up before the decay.")
    ] = 0.0,
    synthetic_classes: Annotated[
        str,
        typer.Option(
            help="Images only: comma-separated transforms (rot90, rot180, rot270, hflip, "
            "vflip, transpose, antitranspose), each turning every training class into one "
            "more class to tell apart, e.g. rot90,rot270,hflip (see docs/training.md)."
        ),
    ] = "",
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Transfer learning: a weights file of the backbone without its top "
            "(.weights.h5 or .h5), or a directory holding one; nothing is downloaded. "
            "Needs a backbone --encoder."
        ),
    ] = None,
    trainable: Annotated[
        str | None,
        typer.Option(
            help="Backbone layers that train: full, partial (the last 20 %, batch norms "
            "frozen) or frozen (only the pooling and embedding head)."
        ),
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            help="Write TensorBoard logs here: recall@1, recall@5 and MAP@R of the "
            "validation set and the learning rate, per epoch."
        ),
    ] = None,
    ssl: Annotated[
        str | None,
        typer.Option(
            help="Self-supervised training instead (labels unused in training, only to "
            "evaluate): simclr, barlowtwins, vicreg or simsiam."
        ),
    ] = None,
    registry: RegistryOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the run summary and plot into this directory.")
    ] = None,
    promote: Annotated[bool, typer.Option(help="Make the new version the active one.")] = False,
    mnist_dir: MnistDirOption = None,
    quiet: Annotated[
        bool, typer.Option(help="No progress bar (there is none when output is not a terminal).")
    ] = False,
) -> None:
    """Train an encoder, evaluate it, and register it as a new version."""
    settings = load_settings()
    with exit_on_error():
        from model import datasets
        from model.pipeline import Fit, train_evaluate_register
        from model.registry import Registry
        from model.training import TrainConfig, TrainResult

        config = TrainConfig(
            encoder=_transfer(
                _json_or_name(encoder or settings.model_encoder, "--encoder"), weights, trainable
            ),
            embedding_dim=embedding_dim or settings.model_embedding_dim,
            loss=loss or settings.model_loss,
            loss_config=_json_object(loss_config, "--loss-config"),
            distance=distance or settings.model_distance,
            epochs=settings.model_epochs if epochs is None else epochs,
            seed=settings.model_seed if seed is None else seed,
            classes_per_batch=classes_per_batch,
            examples_per_class=examples_per_class,
            steps_per_epoch=steps_per_epoch,
            learning_rate=learning_rate,
            validation_split=validation_split,
            validation_by=validation_by,  # type: ignore[arg-type]
            patience=patience,
            augment_shift=augment_shift,
            warmup_epochs=warmup_epochs,
            synthetic_classes=tuple(n.strip() for n in synthetic_classes.split(",") if n.strip()),
            verbose=1 if progress_wanted(quiet) else 0,
        )
        data = datasets.load(dataset or settings.model_dataset, mnist_dir or settings.mnist_dir)
        typer.echo(f"training on {data.name}: {len(data)} examples, {data.num_classes} classes")
        files: dict[str, bytes] = {}

        def evaluate_on_validation(result: TrainResult) -> dict[str, Any]:
            validation = _validation_set(data, result.validation)
            metrics = _evaluate(result.encoder(), validation or data)
            metrics["on"] = "validation classes" if validation is not None else "training data"
            return metrics

        def training_files(result: TrainResult) -> dict[str, bytes]:
            files["training.json"] = (json.dumps(result.summary(), indent=2) + "\n").encode()
            files["training.png"] = _png_bytes(result)
            return files

        fit: Fit | None = None
        if ssl is not None:
            from model.ssl import train_ssl
            from model.ssl.losses import canonical

            fit = functools.partial(train_ssl, method=canonical(ssl))
        if tensorboard is not None:
            from model.training import train as supervised

            logger = _tensorboard_logger(data, config, tensorboard)
            fit = functools.partial(fit or supervised, callbacks=[logger])
        trained = train_evaluate_register(
            data,
            config,
            Registry(registry or settings.registry_dir),
            evaluate=evaluate_on_validation,
            extra_files=training_files,
            promote=promote,
            fit=fit,
        )
        result, metrics, record = trained.result, trained.metrics, trained.version
        assert metrics is not None and record is not None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (out / name).write_bytes(content)
        typer.echo(
            metrics_table([metrics_row(f"{record.version} ({metrics['on']})", dict(metrics))])
        )
        typer.echo(
            f"registered {record.version} in {record.path.parent}"
            + (" (active)" if promote else "")
            + f"; trained {result.epochs_run} epochs in {result.train_seconds:.1f}s"
        )


def _transfer(
    encoder: str | dict[str, Any], weights: Path | None, trainable: str | None
) -> str | dict[str, Any]:
    """The encoder config with ``--weights`` and ``--trainable`` applied (backbones only)."""
    if weights is None and trainable is None:
        return encoder
    config = {"name": encoder} if isinstance(encoder, str) else dict(encoder)
    if str(config.get("name", "")).strip().lower() != "backbone":
        raise ModelError(
            "--weights and --trainable apply to a backbone. Expected --encoder backbone or "
            f'{{"name": "backbone", "architecture": ...}}. Received: --encoder {encoder!r}'
        )
    if weights is not None:
        config["weights"] = str(weights.expanduser().resolve())
    if trainable is not None:
        config["trainable"] = trainable
    return config


def _tensorboard_logger(data: Dataset, config: Any, log_dir: Path) -> Any:
    """A `RetrievalLogger` on the validation set `train` will split off (the same split)."""
    from model import encoders
    from model.callbacks import RetrievalLogger
    from model.evaluation.search import canonical_distance
    from model.training import split_dataset

    if config.validation_split <= 0:
        raise ModelError(
            "--tensorboard logs retrieval on the validation set. Expected --validation-split "
            f"> 0. Received: {config.validation_split}"
        )
    _, held = split_dataset(data, config.validation_split, config.validation_by, config.seed)
    spec = encoders.get(config.encoder).input_spec(data.input_spec)
    return RetrievalLogger(
        spec.to_model_batch(held.x),
        held.y,
        ks=(1, 5),
        distance=canonical_distance(config.distance),
        log_dir=log_dir,
    )


# --- evaluate ----------------------------------------------------------------------


def evaluate(
    version: Annotated[
        str | None, typer.Option(help="Version to evaluate (default: the active one).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="digits, mnist, npz:PATH or folder:PATH (default: SIMSTREAM_MODEL_DATASET)."
        ),
    ] = None,
    seen_classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated labels the model was trained on, to split seen / unseen."
        ),
    ] = None,
    ks: Annotated[str, typer.Option(help="Comma-separated cut-offs of recall@k.")] = "1,5,10",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Write confusion_matrix.png (nearest neighbour at the calibrated threshold) "
            "and projection.png (PCA of the embeddings, coloured by class) here."
        ),
    ] = None,
    registry: RegistryOption = None,
    mnist_dir: MnistDirOption = None,
) -> None:
    """Evaluate a registered encoder: leave-one-out retrieval, calibration, k-NN accuracy."""
    settings = load_settings()
    with exit_on_error():
        from model import datasets
        from model.registry import Registry

        cutoffs = _int_list(ks, "--ks")
        encoder = Registry(registry or settings.registry_dir).load(version)
        data = datasets.load(dataset or settings.model_dataset, mnist_dir or settings.mnist_dir)
        seen = _int_list(seen_classes, "--seen-classes") if seen_classes else None
        results = _evaluate(encoder, data, cutoffs, seen, plots)
        results.update(version=encoder.version, dataset=data.name)
        rows = [
            metrics_row(name, results[name])
            for name in ("all", "seen", "unseen")
            if name in results
        ]
        typer.echo(metrics_table(rows, cutoffs))
        calibration = results["calibration"]
        typer.echo(
            f"calibration (best F1): threshold={calibration['threshold']:.4f} "
            f"precision={calibration['precision']:.4f} recall={calibration['recall']:.4f} "
            f"f1={calibration['f1']:.4f}"
        )
        accuracy = results["classification"]["accuracy"]
        typer.echo(f"nearest-neighbour accuracy at that threshold: {accuracy:.4f}")
        for name, path in results.get("plots", {}).items():
            typer.echo(f"wrote {name}: {path}")
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(results, indent=2) + "\n")
            typer.echo(f"wrote {json_out}")


# --- models ------------------------------------------------------------------------


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only, on one line.")]


@models_app.command("list")
def models_list(registry: RegistryOption = None, as_json: JsonOption = False) -> None:
    """List registered versions; the active one is marked with *."""
    settings = load_settings()
    with exit_on_error():
        from model.registry import Registry

        store = Registry(registry or settings.registry_dir)
        versions, active = store.list(), store.active()
        if as_json:
            rows = [
                {
                    "version": v.version,
                    "active": v.version == active,
                    "created_at": v.created_at,
                    "config": v.config,
                    "metrics": v.metrics,
                }
                for v in versions
            ]
            typer.echo(json.dumps({"active": active, "versions": rows}, default=str))
            return
        if not versions:
            typer.echo(f"no model registered in {store.root}")
            return
        typer.echo(
            f"{'':1} {'version':8} {'created (UTC)':24} {'encoder':9} {'dim':>4} "
            f"{'dataset':24} {'recall@1':>8}"
        )
        for v in versions:
            recall = v.metrics.get("all", {}).get("recall@1")
            typer.echo(
                f"{'*' if v.version == active else ' ':1} {v.version:8} {v.created_at[:23]:24} "
                f"{v.config.get('encoder', {}).get('name', '?')!s:9} "
                f"{v.config.get('embedding_dim', '?')!s:>4} "
                f"{str(v.config.get('dataset', {}).get('name', '?'))[:24]:24} "
                f"{'' if recall is None else f'{recall:.4f}':>8}"
            )


@models_app.command("show")
def models_show(
    version: Annotated[
        str | None, typer.Argument(help="Version (default: the active one).")
    ] = None,
    registry: RegistryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a version's config and metrics as JSON (files verified against the manifest)."""
    settings = load_settings()
    with exit_on_error():
        from model.registry import Registry

        store = Registry(registry or settings.registry_dir)
        record = store.verify(version or store.get().version)
        shown = {"config": record.config, "metrics": record.metrics}
        if as_json:
            typer.echo(json.dumps({"version": record.version, **shown}, default=str))
        else:
            typer.echo(json.dumps(shown, indent=2, default=str))


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to make active, e.g. v3.")],
    registry: RegistryOption = None,
) -> None:
    """Make a version the active one (it is verified first)."""
    settings = load_settings()
    with exit_on_error():
        from model.registry import Registry

        store = Registry(registry or settings.registry_dir)
        store.verify(version)
        store.promote(version)
        typer.echo(f"active: {version}")


@models_app.command("rollback")
def models_rollback(registry: RegistryOption = None) -> None:
    """Return to the previously active version."""
    settings = load_settings()
    with exit_on_error():
        from model.registry import Registry

        typer.echo(f"active: {Registry(registry or settings.registry_dir).rollback()}")


@models_app.command("register-vectors")
def models_register_vectors(
    dim: Annotated[int, typer.Option("--dim", help="Size of your vectors, e.g. 384.")],
    distance: Annotated[
        str,
        typer.Option(
            "--distance",
            help="cosine (vectors are L2-normalised), l2 (Euclidean) or ip (1 - dot).",
        ),
    ] = "cosine",
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Make it the active version.")
    ] = True,
    registry: RegistryOption = None,
) -> None:
    """Register a version that indexes your own float vectors as they are (no encoder).

    Publish the vectors as float arrays of DIM values (`simstream publish --npz` with
    float32 rows, or JSONL `vector`/`array` items); query by `vector`.
    """
    settings = load_settings()
    with exit_on_error():
        from model.registry import Registry
        from model.vectors import register_vectors

        store = Registry(registry or settings.registry_dir)
        record = register_vectors(store, dim, distance, promote=promote)
        state = "active" if promote else "not active: promote it with `simstream models promote`"
        typer.echo(
            f"registered {record.version} (your own vectors: dim {dim}, distance {distance}; "
            f"{state})"
        )


# --- helpers -----------------------------------------------------------------------


def _evaluate(
    encoder: Encoder,
    data: Dataset,
    ks: tuple[int, ...] = (1, 5, 10),
    seen: tuple[int, ...] | None = None,
    plots: Path | None = None,
) -> dict[str, Any]:
    from model.evaluation import UNKNOWN, calibrate, classification_report, retrieve, split_by_class

    embeddings = encoder.embed(encoder.input_spec.to_model_batch(data.x))
    results = retrieve(embeddings, data.y, ks=ks, distance=encoder.distance)
    report: dict[str, Any] = {"all": results.report().to_dict()}
    calibrated_on = results
    if seen is not None:
        seen_mask, unseen_mask = split_by_class(data.y, seen)
        report["seen"] = results.subset(seen_mask).report().to_dict()
        report["unseen"] = results.subset(unseen_mask).report().to_dict()
        if unseen_mask.any():
            calibrated_on = results.subset(unseen_mask)
    calibration = calibrate(calibrated_on.nearest_distance, calibrated_on.matches)
    report["calibration"] = calibration.to_dict()
    predictions = np.where(
        results.nearest_distance <= calibration.threshold, results.nearest_label, UNKNOWN
    )
    report["classification"] = classification_report(data.y, predictions).to_dict()
    if plots is not None:
        from model.evaluation.plots import plot_confusion_matrix, plot_embedding_projection

        names = list(data.class_names)
        report["plots"] = {
            "confusion matrix": str(plots / "confusion_matrix.png"),
            "projection": str(plots / "projection.png"),
        }
        plot_confusion_matrix(data.y, predictions, plots / "confusion_matrix.png", names)
        plot_embedding_projection(embeddings, data.y, plots / "projection.png", class_names=names)
    return report


def _validation_set(data: Dataset, validation: dict[str, Any] | None) -> Dataset | None:
    if not validation or validation.get("by") != "class":
        return None
    return data.subset(np.isin(data.y, validation["classes"]))


def _png_bytes(result: Any) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return bytes(result.plot(Path(tmp) / "training.png").read_bytes())


def _json_or_name(value: str, option: str) -> str | dict[str, Any]:
    return _json_object(value, option) if value.strip().startswith("{") else value


def _json_object(value: str, option: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise ModelError(
            f"Invalid value for {option}. Expected a JSON object. Received: {value!r} ({e})"
        ) from None
    if not isinstance(parsed, dict):
        raise ModelError(f"Invalid value for {option}. Expected a JSON object. Received: {value!r}")
    return parsed


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ModelError(
            f"Invalid value for {option}. Expected comma-separated integers. Received: {value!r}"
        ) from None
    if not numbers:
        raise ModelError(
            f"Invalid value for {option}. Expected at least one integer. Received: {value!r}"
        )
    return numbers
