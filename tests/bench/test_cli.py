from __future__ import annotations

import builtins
import json
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.model import BENCHMARK_CONFIG
from model.datasets import load_digits
from simstream.cli.main import app

runner = CliRunner()

OPTIONS = {
    "model": ["--mnist-dir", "--out", "--dataset", "--seeds", "--epochs", "--synthetic-classes",
              "--validation"],
    "index": ["--out", "--mnist-dir", "--datasets", "--shards", "--efs", "--queries",
              "--random-items", "--latency-queries", "--seed", "--progress"],
    "ingest": ["--out", "--items", "--partitions", "--epochs", "--freshness-seconds",
               "--work-dir"],
    "api": ["--out", "--items", "--dim", "--concurrency", "--duration", "--ingest-rate"],
    "abuse": ["--out", "--items", "--rate", "--idle", "--filter-batches", "--rounds"],
    "cluster": ["--out", "--items", "--dim", "--queries", "--concurrency", "--duration"],
}  # fmt: skip


def test_the_bench_group_lists_every_benchmark() -> None:
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    for name in OPTIONS:
        assert name in result.output


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_benchmark_answers_help_with_its_options(name: str) -> None:
    result = runner.invoke(app, ["bench", name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in OPTIONS[name]:
        assert option in result.output


def test_without_the_bench_package_a_benchmark_exits_one_with_a_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    real_import = builtins.__import__

    def no_bench(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "bench" or name.startswith("bench."):
            raise ModuleNotFoundError(f"No module named {name!r}", name="bench")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bench)
    result = runner.invoke(app, ["bench", "api", "--out", str(tmp_path / "api.json")])
    assert result.exit_code == 1
    assert "package `bench`" in result.output


def test_the_digits_model_benchmark_shifts_its_8x8_images_by_one_pixel(tmp_path: Any) -> None:
    out = tmp_path / "digits.json"
    args = ["bench", "model", "--dataset", "digits", "--epochs", "1", "--out", str(out)]

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    config = json.loads(out.read_text())["config"]
    assert (config["augment_shift"], config["epochs"]) == (1, 1)
    assert config["augment_rotation"] == BENCHMARK_CONFIG.augment_rotation
    assert BENCHMARK_CONFIG.augment_shift == 2


def test_the_validation_split_trains_on_classes_0_to_3_and_never_reads_6_to_9(
    tmp_path: Any,
) -> None:
    out = tmp_path / "validation.json"
    args = [
        "bench", "model", "--dataset", "digits", "--epochs", "1", "--validation",
        "--synthetic-classes", "none", "--out", str(out),
    ]  # fmt: skip

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    protocol = report["protocol"]
    assert protocol["class_split"] == "validation"
    assert (protocol["seen_classes"], protocol["unseen_classes"]) == ([0, 1, 2, 3], [4, 5])
    counts = np.bincount(load_digits().y)
    trained = [round(0.7 * n) for n in counts]
    assert protocol["train_examples"] == sum(trained[:4])
    assert protocol["index_examples"] == sum(counts[:6]) - sum(trained[:6])
    assert report["unseen"]["queries"] == sum(counts[4:6]) - sum(trained[4:6])
    assert report["open_set"]["unknown"] == report["unseen"]["queries"]
    assert report["config"]["synthetic_classes"] == []
    bad = runner.invoke(app, [*args[:-2], "--synthetic-classes", "rot45", "--out", str(out)])
    assert bad.exit_code == 1 and "Expected distinct names" in bad.output
