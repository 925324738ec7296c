from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from model.datasets import Dataset
from model.evaluation import evaluate_retrieval
from model.training import (
    MONITOR,
    TrainConfig,
    TrainResult,
    measure_step_limit,
    split_dataset,
    train,
)
from simstream.errors import ModelError, SamplerError
from tests.model.conftest import FAST


def _recall_at_1(result: TrainResult, data: Dataset) -> float:
    embeddings = result.encoder().embed(result.input_spec.to_model_batch(data.x))
    return evaluate_retrieval(embeddings, data.y, ks=(1,)).micro["recall@1"]


def test_a_short_training_run_improves_recall_on_held_out_digits(digits: Dataset) -> None:
    kept, held_out = split_dataset(digits, 0.3, by="example", seed=0)
    config = replace(FAST, epochs=3, steps_per_epoch=15)
    before = _recall_at_1(train(kept, replace(config, epochs=0)), held_out)
    after = _recall_at_1(train(kept, config), held_out)
    assert after > before + 0.05, (before, after)


def test_the_same_seed_gives_the_same_weights_and_history(digits: Dataset) -> None:
    small = digits.subset(np.arange(400))
    config = replace(FAST, epochs=1, steps_per_epoch=3)
    a, b = train(small, config), train(small, config)
    assert a.history == b.history
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_early_stopping_keeps_the_weights_of_the_best_validation_epoch(digits: Dataset) -> None:
    config = replace(FAST, epochs=4, steps_per_epoch=4, validation_split=0.3, patience=1)
    result = train(digits, config)
    assert result.best_epoch is not None and 1 <= result.best_epoch <= result.epochs_run <= 4
    assert len(result.history[MONITOR]) == result.epochs_run
    best = result.history[MONITOR][result.best_epoch - 1]
    assert best == max(result.history[MONITOR])
    held_out = digits.subset(np.isin(digits.y, result.validation["classes"]))  # type: ignore[index]
    assert _recall_at_1(result, held_out) == pytest.approx(best, abs=1e-9)


def test_the_summary_is_json_and_the_plot_is_a_png(tmp_path: Path, trained: TrainResult) -> None:
    summary = json.loads(json.dumps(trained.summary()))
    assert summary["epochs_run"] == 2 and summary["config"]["epochs"] == 2
    assert summary["dataset"]["name"] == "digits" and summary["train_seconds"] > 0
    assert set(summary["final"]) == {"loss"} and summary["best_epoch"] is None
    path = trained.plot(tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_model_config_records_what_the_registry_needs(trained: TrainResult) -> None:
    config = trained.model_config()
    assert config["embedding_dim"] == 16 and config["distance"] == "cosine"
    assert config["encoder"]["name"] == "cnn" and config["loss"] == "multisimilarity"


def test_a_split_by_class_holds_out_whole_classes_and_by_example_a_share_of_each(
    digits: Dataset,
) -> None:
    kept, held = split_dataset(digits, 0.2, by="class", seed=3)
    assert len(set(held.y.tolist())) == 2 and not set(held.y.tolist()) & set(kept.y.tolist())
    kept, held = split_dataset(digits, 0.1, by="example", seed=3)
    assert set(held.y.tolist()) == set(range(10)) and len(held) == pytest.approx(180, abs=10)
    with pytest.raises(ModelError, match="at least 2 classes on each side"):
        split_dataset(digits, 0.05, by="class")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", -1),
        ("embedding_dim", 0),
        ("validation_split", 1.0),
        ("learning_rate", 0.0),
        ("validation_by", "pixel"),
        ("augment_shift", -2),
        ("patience", -1),
    ],
)
def test_an_invalid_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ModelError, match=f"`{field}`"):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_an_unknown_loss_or_too_few_classes_fail_before_training(digits: Dataset) -> None:
    with pytest.raises(ModelError, match="Unknown loss"):
        train(digits, replace(FAST, loss="hinge"))
    with pytest.raises(SamplerError, match="at least one example"):
        train(digits.subset(np.arange(0)), FAST)


@pytest.mark.parametrize("loss", ["proxyanchor", "xbm", "triplet"])
def test_stateful_and_stateless_losses_get_the_arguments_they_need(
    digits: Dataset, loss: str
) -> None:
    result = train(digits.subset(np.arange(600)), replace(FAST, loss=loss, epochs=1))
    assert np.isfinite(result.history["loss"]).all()
    assert result.model.output_shape == (None, 16)


def test_fine_tuning_starts_from_a_copy_of_the_initial_encoder(
    digits: Dataset, trained: TrainResult
) -> None:
    initial = trained.encoder("v1")
    before = [w.copy() for w in initial.model.get_weights()]
    result = train(digits, replace(FAST, epochs=0), initial=initial)
    for a, b in zip(result.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    tuned = train(digits, replace(FAST, epochs=1, steps_per_epoch=2), initial=initial)
    assert tuned.model is not initial.model and tuned.input_spec == initial.input_spec
    for a, b in zip(initial.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_augmented_training_runs_in_the_graph_and_reports_its_throughput(
    digits: Dataset,
) -> None:
    config = replace(FAST, epochs=1, steps_per_epoch=3, augment_shift=1, augment_rotation=10.0)
    result = train(digits, config)
    assert result.train_images == 3 * config.classes_per_batch * config.examples_per_class
    assert result.summary()["train_images_per_s"] > 0
    # The saved encoder has no augmentation layer: it only sits in the training graph.
    assert not any("augmentation" in layer.name for layer in result.model.layers)
    weights = [w.copy() for w in result.model.get_weights()]
    x = result.input_spec.to_model_batch(digits.x[:32])
    assert measure_step_limit(result, x, digits.y[:32], steps=3, warmup=1) > 0
    for before, after in zip(weights, result.model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # measured on a copy


def test_serving_features_drops_the_embedding_layer_into_a_training_only_head(
    digits: Dataset, tmp_path: Path
) -> None:
    config = replace(FAST, epochs=1, steps_per_epoch=3, serve_features=True)
    result = train(digits, config)
    assert result.trained is not None and result.trained is not result.model
    assert result.trained.output_shape[-1] == config.embedding_dim
    assert result.model.output_shape[-1] == 32  # the CNN's last filter count
    assert "embedding" not in [layer.name for layer in result.model.layers]
    embeddings = result.encoder().embed(result.input_spec.to_model_batch(digits.x[:50]))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert result.model_config()["embedding_dim"] == 32
    # The served features share the trained weights, and the saved archive reloads.
    path = tmp_path / "served.keras"
    result.model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    x = result.input_spec.to_model_batch(digits.x[:8])
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), embeddings[:8], atol=1e-5)


def test_fine_tuning_an_encoder_that_serves_features_keeps_serving_them(
    digits: Dataset,
) -> None:
    config = replace(FAST, epochs=1, steps_per_epoch=2, serve_features=True)
    first = train(digits, config)
    again = train(digits, config, initial=first.encoder())
    assert again.model.output_shape == first.model.output_shape == (None, 32)
