from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simstream.cli.main import app

runner = CliRunner()
TINY_ENCODER = '{"name": "cnn", "filters": [8, 16], "convs_per_block": 1}'


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["evaluate"],
        ["models"],
        ["models", "list"],
        ["models", "show"],
        ["models", "promote"],
        ["models", "rollback"],
    ],
)
def test_every_model_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_train_registers_a_version_that_list_show_evaluate_and_promote_see(
    tmp_path: Path,
) -> None:
    registry, out = tmp_path / "models", tmp_path / "run"
    train = runner.invoke(
        app,
        [
            "train", "--dataset", "digits", "--encoder", TINY_ENCODER, "--embedding-dim", "8",
            "--epochs", "1", "--steps-per-epoch", "3", "--classes-per-batch", "6",
            "--examples-per-class", "4", "--registry", str(registry), "--out", str(out),
            "--promote", "--quiet",
        ],
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    assert "registered v1" in train.output and "(active)" in train.output
    assert (out / "training.png").is_file() and (out / "training.json").is_file()
    assert (registry / "v1" / "training.png").is_file()

    listing = runner.invoke(app, ["models", "list", "--registry", str(registry)])
    assert listing.exit_code == 0 and "* v1" in listing.output

    shown = runner.invoke(app, ["models", "show", "v1", "--registry", str(registry)])
    assert json.loads(shown.output)["config"]["embedding_dim"] == 8

    report = tmp_path / "eval.json"
    evaluated = runner.invoke(
        app,
        ["evaluate", "--dataset", "digits", "--seen-classes", "0,1,2,3,4,5,6,7",
         "--json", str(report), "--registry", str(registry)],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "recall@1" in evaluated.output and "unseen" in evaluated.output
    results = json.loads(report.read_text())
    assert {"all", "seen", "unseen", "calibration", "classification"} <= set(results)
    assert results["version"] == "v1" and 0 <= results["all"]["recall@1"] <= 1

    promoted = runner.invoke(app, ["models", "promote", "v1", "--registry", str(registry)])
    assert promoted.exit_code == 0 and "active: v1" in promoted.output


def test_errors_exit_with_status_one_and_a_one_line_message(tmp_path: Path) -> None:
    rollback = runner.invoke(app, ["models", "rollback", "--registry", str(tmp_path)])
    assert rollback.exit_code == 1 and "Cannot roll back" in rollback.output
    missing = runner.invoke(app, ["models", "promote", "v9", "--registry", str(tmp_path)])
    assert missing.exit_code == 1 and "v9 not found" in missing.output
    bad = runner.invoke(app, ["train", "--encoder", "{oops", "--registry", str(tmp_path)])
    assert bad.exit_code == 1 and "Expected a JSON object" in bad.output
    empty = runner.invoke(app, ["models", "list", "--registry", str(tmp_path)])
    assert empty.exit_code == 0 and "no model registered" in empty.output


def test_train_ssl_trains_without_labels_and_evaluates_on_the_held_out_classes(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "models"
    train = runner.invoke(
        app,
        [
            "train", "--dataset", "digits", "--encoder", TINY_ENCODER, "--embedding-dim", "8",
            "--epochs", "1", "--ssl", "vicreg", "--registry", str(registry), "--quiet",
        ],
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    assert "registered v1" in train.output and "validation classes" in train.output
    summary = json.loads((registry / "v1" / "training.json").read_text())
    assert summary["dataset"]["self_supervised"] == "vicreg"
    assert summary["validation"]["by"] == "class"


def test_train_ssl_refuses_an_unknown_method(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--ssl", "byol", "--registry", str(tmp_path)])
    assert result.exit_code == 1
    assert "Expected one of ['simclr', 'barlowtwins', 'vicreg', 'simsiam']" in result.output


def test_train_takes_synthetic_classes_and_names_the_transforms_it_knows(tmp_path: Path) -> None:
    registry = tmp_path / "models"
    train = runner.invoke(
        app,
        [
            "train", "--dataset", "digits", "--encoder", TINY_ENCODER, "--embedding-dim", "8",
            "--epochs", "1", "--steps-per-epoch", "2", "--classes-per-batch", "6",
            "--examples-per-class", "4", "--synthetic-classes", "rot90, hflip",
            "--registry", str(registry), "--quiet",
        ],
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    summary = json.loads((registry / "v1" / "training.json").read_text())
    assert summary["config"]["synthetic_classes"] == ["rot90", "hflip"]
    bad = runner.invoke(app, ["train", "--synthetic-classes", "rot45", "--registry", str(tmp_path)])
    assert bad.exit_code == 1
    assert "Expected distinct names from ['antitranspose', 'hflip'" in bad.output
    assert "Received: ['rot45']" in bad.output
