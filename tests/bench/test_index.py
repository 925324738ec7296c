from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from bench.index import (
    BenchmarkConfig,
    load_dataset,
    markdown_table,
    mnist_test_images,
    pca_unit,
    run,
    write,
)
from simstream.errors import DatasetError
from workers.index.config import IndexConfig

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
REQUIRED = [
    "recall_at_10",
    "qps_sharded",
    "qps_raw",
    "insert_rate_sharded",
    "insert_rate_raw",
    "p99_ms_under_writes",
    "p99_ms_idle",
    "snapshot_save_s",
    "snapshot_load_s",
    "bytes_per_item",
    "ratios",
    "targets",
    "matched",
    "upserts",
]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def test_a_directory_without_mnist_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        mnist_test_images(tmp_path)


def test_the_mnist_dataset_needs_a_directory() -> None:
    with pytest.raises(DatasetError, match="--mnist-dir"):
        load_dataset("mnist", BenchmarkConfig(mnist_dir=None))


@pytest.mark.skipif(
    not MNIST.is_dir() and os.environ.get("CI") != "true",
    reason="the shared MNIST folder is absent",
)
def test_the_shared_mnist_test_set_is_read_and_projected_to_64_dimensional_unit_vectors() -> None:
    images = mnist_test_images(MNIST)
    assert images.shape == (10000, 784)
    projected = pca_unit(images[:1500], 64)
    assert projected.shape == (1500, 64)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)


def test_pca_keeps_the_leading_directions_and_normalises(rng: np.random.Generator) -> None:
    data = rng.standard_normal((200, 10)) * np.array([10, 5, 1, 1, 1, 1, 1, 1, 1, 1])
    projected = pca_unit(data, 2)
    assert projected.shape == (200, 2)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)


def test_a_small_run_reports_every_figure_and_writes_json_and_a_plot(tmp_path: Path) -> None:
    config = BenchmarkConfig(
        datasets=("random",),
        shards=(1, 2),
        n_random=500,
        n_queries=40,
        dim=16,
        efs=(16, 64),
        latency_queries=40,
        writer_batch=16,
        index=IndexConfig(dim=16, ef_construction=64),
    )
    report = run(config, progress=False)
    png = write(report, tmp_path / "index.json")
    saved = json.loads((tmp_path / "index.json").read_text())
    assert set(saved["configs"]) == {"random/S=1", "random/S=2"}
    for result in saved["configs"].values():
        assert all(key in result for key in REQUIRED)
        assert set(result["recall_at_10"]) == {"16", "64"}
        assert 0 <= result["recall_at_10_default_ef"] <= 1
        assert result["qps_sharded"]["batched"] > 0
        assert set(result["qps_single_by_ef"]) == {"16", "64"}
        assert result["upserts"]["sharded_single"] > 0 and result["upserts"]["raw_batch16"] > 0
        assert set(result["targets"]) >= {"qps_single_matched_ratio", "upsert_batch16_ratio"}
    # One graph per partition: the bare graphs' ceiling is measured beside S=2.
    split = saved["configs"]["random/S=2"]["matched"]["split_raw"]
    assert split["single"] is None or split["single"] > 0
    assert png.stat().st_size > 1000
    assert "| random/S=2 |" in markdown_table(report)


def test_bench_index_is_registered_under_the_bench_group(tmp_path: Path) -> None:
    from simstream.cli import bench as bench_cli

    app = typer.Typer()
    bench_cli.register(app)
    result = CliRunner().invoke(app, ["bench", "index", "--help"])
    assert result.exit_code == 0, result.output
    assert "--out" in result.output
    bad = CliRunner().invoke(app, ["bench", "index", "--shards", "0", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
