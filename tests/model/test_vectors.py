"""Models of your own vectors: an identity encoder with a declared dimension and distance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.inputs import InputSpec
from model.registry import Registry
from model.vectors import is_vectors, register_vectors
from simstream.errors import ModelError, PayloadError


@pytest.mark.parametrize("distance", ["l2", "ip"])
def test_an_l2_or_ip_vectors_model_embeds_vectors_exactly_as_they_are(
    tmp_path: Path, distance: str
) -> None:
    registry = Registry(tmp_path)
    record = register_vectors(registry, 5, distance, promote=True)
    vectors = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32) * 10

    embedded = registry.load().embed_payloads(list(vectors))

    np.testing.assert_array_equal(embedded, vectors)
    assert is_vectors(record.config)
    assert record.config["index_space"] == distance
    assert record.config["embedding_dim"] == 5


def test_a_cosine_vectors_model_l2_normalises_them(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    record = register_vectors(registry, 3, "cosine")

    embedded = registry.load(record.version).embed_payloads([np.array([3.0, 0.0, -4.0])])

    np.testing.assert_allclose(embedded, [[0.6, 0.0, -0.8]], atol=1e-6)
    assert record.config["distance"] == "cosine"


def test_a_vectors_model_takes_only_float_vectors_of_its_dimension(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    spec = registry.get(register_vectors(registry, 4, "l2").version).input_spec

    assert spec.passthrough
    assert InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(PayloadError, match=r"Expected shape \(4,\)\. Received: shape=\(3,\)"):
        spec.to_model_input(np.zeros(3, np.float32))
    with pytest.raises(PayloadError, match=r"Expected floating-point values.*dtype=int32"):
        spec.to_model_input(np.zeros(4, np.int32))
    with pytest.raises(PayloadError, match="Expected finite values"):
        spec.to_model_input(np.array([0.0, np.nan, 0.0, 1.0], np.float32))


def test_an_image_model_spec_still_accepts_integer_vectors() -> None:
    spec = InputSpec.vector(2)

    assert "passthrough" not in spec.to_dict()
    np.testing.assert_array_equal(spec.to_model_input(np.array([1, 2], np.int64)), [1.0, 2.0])


@pytest.mark.parametrize(
    ("dim", "distance", "message"),
    [
        (0, "cosine", r"Expected 1 ≤ dim ≤ 65536\. Received: dim=0"),
        (8, "euclid", r"Expected one of \('cosine', 'l2', 'ip'\)\. Received: distance='euclid'"),
    ],
)
def test_an_invalid_dimension_or_distance_is_refused(
    tmp_path: Path, dim: int, distance: str, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        register_vectors(Registry(tmp_path), dim, distance)
    assert Registry(tmp_path).list() == []


def test_the_cli_registers_a_vectors_version_or_says_in_one_line_what_is_wrong(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from simstream.cli.main import app

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            app, ["models", "register-vectors", "--registry", str(tmp_path), *args]
        )
        return result.exit_code, result.output

    bad = run("--dim", "384", "--distance", "hamming")
    good = run("--dim", "384", "--distance", "ip", "--no-promote")

    assert bad[0] == 1
    assert "Expected one of ('cosine', 'l2', 'ip'). Received: distance='hamming'" in bad[1]
    assert "Traceback" not in bad[1]
    assert good[0] == 0, good[1]
    assert "registered v1 (your own vectors: dim 384, distance ip; not active" in good[1]
    assert Registry(tmp_path).active() is None
    assert Registry(tmp_path).get("v1").config["index_space"] == "ip"
