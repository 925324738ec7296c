from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from simstream.errors import DatasetError
from workers.index.benchmark import (
    BenchmarkConfig,
    exact_top_k,
    markdown_table,
    pca_unit,
    read_idx_images,
    run,
    write,
)
from workers.index.config import IndexConfig

MNIST = Path(__file__).resolve().parents[4] / "shared" / "data" / "mnist"
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
]


def write_idx(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    header = np.array([2051, n, rows, cols], dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def test_idx_images_are_read_from_a_gzipped_file(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    np.testing.assert_array_equal(read_idx_images(tmp_path), images.reshape(2, 12))


def test_a_directory_without_mnist_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="No MNIST test images"):
        read_idx_images(tmp_path)


@pytest.mark.skipif(
    not MNIST.is_dir() and os.environ.get("CI") != "true",
    reason="the shared MNIST folder is absent",
)
def test_the_shared_mnist_test_set_is_read_and_projected_to_64_dimensional_unit_vectors() -> None:
    images = read_idx_images(MNIST)
    assert images.shape == (10000, 784)
    projected = pca_unit(images[:1500], 64)
    assert projected.shape == (1500, 64)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)


def test_pca_keeps_the_leading_directions_and_normalises(rng: np.random.Generator) -> None:
    data = rng.standard_normal((200, 10)) * np.array([10, 5, 1, 1, 1, 1, 1, 1, 1, 1])
    projected = pca_unit(data, 2)
    assert projected.shape == (200, 2)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)


def test_exact_top_k_orders_by_cosine_distance(rng: np.random.Generator) -> None:
    base = rng.standard_normal((50, 4))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    top = exact_top_k(base, base[:3], 5)
    assert top[:, 0].tolist() == [0, 1, 2]
    sims = base[:3] @ base.T
    assert np.all(np.diff(np.take_along_axis(sims, top, 1), axis=1) <= 1e-12)


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
    assert png.stat().st_size > 1000
    assert "| random/S=2 |" in markdown_table(report)


def test_bench_index_is_registered_under_the_bench_group(tmp_path: Path) -> None:
    from simstream.cli import index as index_cli
    from simstream.cli import model as model_cli

    app = typer.Typer()
    model_cli.register(app)
    index_cli.register(app)
    result = CliRunner().invoke(app, ["bench", "index", "--help"])
    assert result.exit_code == 0, result.output
    assert "--out" in result.output
    bad = CliRunner().invoke(app, ["bench", "index", "--shards", "0", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
