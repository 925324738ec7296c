"""`simstream train` with transfer options, warm-up and TensorBoard; `evaluate --plots`."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from typer.testing import CliRunner

from model.encoders.backbone import BACKBONE_LAYER
from model.registry import Registry
from simstream.cli.main import app
from tests.model.test_callbacks import _events

runner = CliRunner()
MOBILENET = '{"name": "backbone", "architecture": "mobilenetv3small"}'


def test_train_fine_tunes_a_frozen_backbone_from_local_weights_and_logs_to_tensorboard(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "weights" / "mobilenet_v3_small_notop.weights.h5"
    weights.parent.mkdir()
    network = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    network.save_weights(weights)
    registry, logs = tmp_path / "models", tmp_path / "tb"

    train = runner.invoke(
        app,
        [
            "train", "--dataset", "digits", "--encoder", MOBILENET, "--weights",
            str(weights.parent), "--trainable", "frozen", "--embedding-dim", "8",
            "--epochs", "2", "--steps-per-epoch", "2", "--classes-per-batch", "4",
            "--examples-per-class", "4", "--warmup-epochs", "1", "--tensorboard", str(logs),
            "--registry", str(registry), "--quiet",
        ],
    )  # fmt: skip

    assert train.exit_code == 0, train.output
    version = Registry(registry).get("v1")
    encoder = version.config["encoder"]
    assert (encoder["weights"], encoder["trainable"]) == (str(weights.parent), "frozen")
    assert version.config["training"]["config"]["warmup_epochs"] == 1
    loaded = Registry(registry).load("v1").model.get_layer(BACKBONE_LAYER)
    for got, expected in zip(loaded.get_weights(), network.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)  # frozen: training left them as loaded
    events = _events(logs)
    assert [step for step, _ in events["retrieval/recall@1"]] == [0, 1]
    assert {"retrieval/recall@5", "retrieval/map@r", "optimizer/learning_rate"} <= set(events)


def test_weights_with_an_encoder_that_is_no_backbone_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--encoder", "cnn", "--weights", str(tmp_path), "--registry", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "apply to a backbone" in result.output


def test_evaluate_plots_a_confusion_matrix_of_every_query_and_a_projection(
    tmp_path: Path,
) -> None:
    registry, plots = tmp_path / "models", tmp_path / "plots"
    trained = runner.invoke(
        app,
        [
            "train", "--dataset", "digits", "--encoder",
            '{"name": "cnn", "filters": [8, 16], "convs_per_block": 1}', "--embedding-dim", "8",
            "--epochs", "1", "--steps-per-epoch", "3", "--registry", str(registry), "--promote",
            "--quiet",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    report = tmp_path / "eval.json"

    evaluated = runner.invoke(
        app,
        ["evaluate", "--dataset", "digits", "--registry", str(registry), "--plots", str(plots),
         "--json", str(report)],
    )  # fmt: skip

    assert evaluated.exit_code == 0, evaluated.output
    for name in ("confusion_matrix.png", "projection.png"):
        assert (plots / name).read_bytes().startswith(b"\x89PNG")
    assert json.loads(report.read_text())["plots"]["projection"] == str(plots / "projection.png")
