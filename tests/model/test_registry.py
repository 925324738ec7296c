from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from model.datasets import Dataset
from model.inputs import InputSpec
from model.registry import MANIFEST_FILE, MODEL_FILE, Encoder, Registry
from model.training import TrainResult
from simstream.errors import ModelIntegrityError, RegistryError

REPO = Path(__file__).resolve().parents[2]


def _register(registry: Registry, trained: TrainResult, **kwargs: object) -> str:
    record = registry.register(
        trained.model,
        trained.input_spec,
        trained.model_config(),
        {"recall@1": 0.5},
        **kwargs,  # type: ignore[arg-type]
    )
    return record.version


def test_versions_get_monotonic_ids_and_hold_every_promised_file(
    tmp_path: Path, trained: TrainResult
) -> None:
    registry = Registry(tmp_path)
    first = _register(registry, trained, extra_files={"training.png": b"png"})
    second = _register(registry, trained)
    assert (first, second) == ("v1", "v2")
    files = sorted(p.name for p in (tmp_path / "v1").iterdir())
    assert files == [
        "config.json",
        "encoder.keras",
        "manifest.json",
        "metrics.json",
        "training.png",
    ]
    manifest = json.loads((tmp_path / "v1" / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == set(files) - {MANIFEST_FILE}
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    config = registry.get("v1").config
    assert config["input_spec"]["shape"] == [8, 8, 1] and config["embedding_dim"] == 16
    assert config["distance"] == "cosine" and "keras" in config["code_version"]
    assert config["dataset"]["name"] == "digits"
    assert [v.version for v in registry.list()] == ["v1", "v2"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_version_loaded_in_a_fresh_process_gives_identical_embeddings(
    tmp_path: Path, trained: TrainResult, digits: Dataset
) -> None:
    registry = Registry(tmp_path)
    version = _register(registry, trained)
    inputs = digits.model_inputs()[:64]
    np.save(tmp_path / "inputs.npy", inputs)
    script = (
        "import sys, numpy as np\n"
        "from model.registry import Registry\n"
        "encoder = Registry(sys.argv[1]).load(sys.argv[2])\n"
        "encoder.warmup(32)\n"
        "np.save(sys.argv[3], encoder.embed(np.load(sys.argv[4]), batch_size=32))\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path),
            version,
            str(tmp_path / "out.npy"),
            str(tmp_path / "inputs.npy"),
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    here = trained.encoder().embed(inputs, batch_size=32)
    there = np.load(tmp_path / "out.npy")
    assert there.dtype == np.float32 and there.shape == (64, 16)
    np.testing.assert_allclose(there, here, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(there, axis=1), 1.0, rtol=1e-5)


def test_the_loaded_encoder_carries_version_spec_and_distance(
    tmp_path: Path, trained: TrainResult, digits: Dataset
) -> None:
    registry = Registry(tmp_path)
    version = _register(registry, trained, promote=True)
    encoder = registry.load()
    assert isinstance(encoder, Encoder)
    assert (encoder.version, encoder.distance, encoder.embedding_dim) == (version, "cosine", 16)
    assert encoder.input_spec == trained.input_spec
    out = encoder.embed_payloads(digits.x[:3])
    assert out.shape == (3, 16)
    assert encoder.embed(digits.model_inputs()[0]).shape == (1, 16)
    with pytest.raises(RegistryError, match="shape"):
        encoder.embed(np.zeros((2, 4, 4, 1)))


@pytest.mark.parametrize("target", ["encoder.keras", "config.json", "metrics.json"])
def test_a_tampered_file_is_refused(tmp_path: Path, trained: TrainResult, target: str) -> None:
    registry = Registry(tmp_path)
    version = _register(registry, trained)
    path = tmp_path / version / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=f"{target} of version {version} was altered"):
        registry.load(version)


def test_an_extra_or_missing_file_or_a_missing_manifest_is_refused(
    tmp_path: Path, trained: TrainResult
) -> None:
    registry = Registry(tmp_path)
    version = _register(registry, trained)
    (tmp_path / version / "notes.txt").write_text("x")
    with pytest.raises(ModelIntegrityError, match="do not match its manifest"):
        registry.load(version)
    (tmp_path / version / "notes.txt").unlink()
    (tmp_path / version / "metrics.json").unlink()
    with pytest.raises(ModelIntegrityError, match="do not match its manifest"):
        registry.load(version)
    (tmp_path / version / MANIFEST_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match="no valid manifest"):
        registry.load(version)


def test_an_h5_file_is_refused_even_when_listed_in_the_manifest(
    tmp_path: Path, trained: TrainResult
) -> None:
    registry = Registry(tmp_path)
    version = _register(registry, trained)
    folder = tmp_path / version
    (folder / "encoder.h5").write_bytes(b"\x89HDF")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"]["encoder.h5"] = {"sha256": "0" * 64, "size": 4}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="unsafe files"):
        registry.load(version)
    with pytest.raises(RegistryError, match="unsafe file type"):
        registry.register(trained.model, trained.input_spec, extra_files={"w.h5": b""})


def test_a_model_with_a_lambda_layer_is_refused_at_load(tmp_path: Path) -> None:
    inputs = keras.Input((3,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Dense(2)(inputs))
    model = keras.Model(inputs, outputs)
    registry = Registry(tmp_path)
    version = registry.register(model, InputSpec.vector(3)).version
    assert registry.verify(version).version == version  # the files themselves are intact
    with pytest.raises(ModelIntegrityError, match="Cannot load version v1 safely"):
        registry.load(version)


def test_a_model_file_that_is_not_a_keras_archive_is_refused(
    tmp_path: Path, trained: TrainResult
) -> None:
    registry = Registry(tmp_path)
    version = _register(registry, trained)
    folder = tmp_path / version
    (folder / MODEL_FILE).write_bytes(b"not a zip")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    import hashlib

    manifest["files"][MODEL_FILE] = {"sha256": hashlib.sha256(b"not a zip").hexdigest(), "size": 9}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not zipfile.is_zipfile(folder / MODEL_FILE)
    with pytest.raises(ModelIntegrityError, match=r"not a \.keras archive"):
        registry.load(version)


def test_promote_and_rollback_move_the_active_pointer_and_keep_history(
    tmp_path: Path, trained: TrainResult
) -> None:
    registry = Registry(tmp_path)
    assert registry.active() is None
    with pytest.raises(RegistryError, match="No active model"):
        registry.load()
    v1, v2, v3 = (_register(registry, trained) for _ in range(3))
    registry.promote(v1)
    registry.promote(v2)
    registry.promote(v2)  # promoting the active version again changes nothing
    registry.promote(v3)
    assert registry.active() == v3
    assert registry.rollback() == v2
    assert registry.rollback() == v1
    with pytest.raises(RegistryError, match="Cannot roll back"):
        registry.rollback()
    actions = [(h["action"], h["version"]) for h in registry.history()]
    assert actions == [
        ("promote", "v1"),
        ("promote", "v2"),
        ("promote", "v3"),
        ("rollback", "v2"),
        ("rollback", "v1"),
    ]
    state = json.loads((tmp_path / "ACTIVE").read_text())
    assert state["active"] == "v1"


def test_ids_are_never_reused_after_a_version_directory_is_removed(
    tmp_path: Path, trained: TrainResult
) -> None:
    import shutil

    registry = Registry(tmp_path)
    _register(registry, trained)
    second = _register(registry, trained, promote=True)
    registry.promote("v1")
    shutil.rmtree(tmp_path / second)
    assert _register(registry, trained) == "v3"


def test_unknown_versions_and_invalid_names_are_registry_errors(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="v7 not found"):
        registry.promote("v7")
    with pytest.raises(RegistryError, match="Invalid version id"):
        registry.get("../etc")
    assert registry.list() == []


def test_a_temp_directory_left_by_a_crash_is_ignored_and_cleaned(
    tmp_path: Path, trained: TrainResult
) -> None:
    (tmp_path / ".tmp-crashed").mkdir(parents=True)
    (tmp_path / ".tmp-crashed" / "encoder.keras").write_bytes(b"half")
    registry = Registry(tmp_path)
    assert registry.list() == []
    assert _register(registry, trained) == "v1"
    assert not (tmp_path / ".tmp-crashed").exists()


def test_uint8_images_embed_as_their_scaled_model_inputs_do(
    trained: TrainResult, digits: Dataset
) -> None:
    encoder = trained.encoder()
    spec = encoder.input_spec
    compact = np.stack([spec.to_compact_input(image) for image in digits.x[:40]])
    scaled = np.stack([spec.to_model_input(image) for image in digits.x[:40]])
    assert compact.dtype == np.uint8 and scaled.dtype == np.float32
    assert compact.shape == scaled.shape == (40, *spec.shape)

    from_bytes = encoder.embed(compact, batch_size=16)

    np.testing.assert_allclose(from_bytes, encoder.embed(scaled, batch_size=16), atol=1e-5)
    assert not np.allclose(from_bytes, encoder.embed(compact.astype(np.float32), batch_size=16))
    wrapper = encoder._compact_model()
    assert wrapper.inputs[0].dtype == "uint8"  # the batch crosses to the device as bytes
    assert wrapper is encoder._compact_model()  # built once


def test_vector_specs_keep_their_scaling_on_the_host() -> None:
    spec = InputSpec.vector(4, scale=2.0, offset=1.0)
    np.testing.assert_array_equal(
        spec.to_compact_input(np.array([0.0, 1.0, 2.0, 3.0])), [1.0, 3.0, 5.0, 7.0]
    )
