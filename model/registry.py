"""A versioned, verified store of trained encoders on disk, and `Encoder`, the runtime wrapper.

Layout under the registry root::

    v1/  encoder.keras  config.json  metrics.json  [extra files]  manifest.json
    v2/  ...
    ACTIVE           {"active": "v2", "stack": ["v1", "v2"], "history": [...]}
    .lock            serialises writers (flock)

Contract:

- **Versions are immutable and ids monotonic** (``v1``, ``v2``…, never reused:
  the next id is one more than the largest ever seen in directories or history).
- **Writes are atomic**: a version is written into a temporary directory in the
  root, every file fsynced, ``manifest.json`` (SHA-256 and size of every other
  file) written last, then the directory is renamed to ``vN`` and the root
  fsynced. A crash leaves either a complete version or an ignored ``.tmp-*``.
- **Loads are verified**: `Registry.load` checks the manifest (no missing,
  changed or extra file), refuses anything but a ``.keras`` archive (no
  ``.h5``), and deserialises with ``safe_mode=True`` (no Lambda layer); any
  failure is a `ModelIntegrityError`.
- **The active version is a pointer**: ``ACTIVE`` is replaced atomically
  (temp file + fsync + rename). `Registry.promote` pushes a version on its
  stack, `Registry.rollback` pops back to the previous one; every change is
  appended to its history.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.inputs import InputSpec
from simstream.durable import atomic_write_bytes, fsync_path, publish_dir, sha256_file, write_bytes
from simstream.errors import ModelIntegrityError, RegistryError
from simstream.log import get_logger

log = get_logger("model.registry")

MODEL_FILE = "encoder.keras"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
ACTIVE_FILE = "ACTIVE"
FORMAT_VERSION = 1
_VERSION = re.compile(r"^v([1-9][0-9]*)$")
_UNSAFE_SUFFIXES = (".h5", ".hdf5", ".pb", ".pkl", ".pickle")


# --- the runtime wrapper -----------------------------------------------------------


class Encoder:
    """A loaded encoder, ready to embed: what workers hold.

    Args:
        model: a Keras model mapping ``(B, *input_spec.shape)`` to ``(B, D)``.
        input_spec: how raw payloads become model inputs.
        version: registry version id (``"v3"``) or a free label for unregistered models.
        distance: the distance the embeddings are meant for (``"cosine"``…).
    """

    def __init__(
        self, model: Any, input_spec: InputSpec, version: str, distance: str = "cosine"
    ) -> None:
        self.model = model
        self.input_spec = input_spec
        self.version = version
        self.distance = distance
        self.embedding_dim = int(model.output_shape[-1])
        self._compact_lock = threading.Lock()
        self._compact_wrapper: Any = None

    def __repr__(self) -> str:
        return (
            f"Encoder(version={self.version!r}, input={self.input_spec.shape}, "
            f"dim={self.embedding_dim}, distance={self.distance!r})"
        )

    def embed(self, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embed model inputs (converted by ``input_spec``).

        Args:
            inputs: ``(N, *input_spec.shape)`` (a single input without the batch
                axis is accepted too): model inputs (`InputSpec.to_model_input`),
                or for an image spec uint8 images (`InputSpec.to_compact_input`),
                which are scaled inside the model's graph, on its device.
            batch_size: inputs per forward pass.

        Returns:
            float32 ``(N, D)`` embeddings of unit L2 norm; a ``passthrough`` spec's
            (your own vectors, `model.vectors`) as its model returns them.
        """
        model = self.model
        compact = self._compact(inputs)
        if compact is not None:
            x, model = compact, self._compact_model()
        else:
            x = np.asarray(inputs, dtype=self.input_spec.dtype)
        if x.shape == self.input_spec.shape:
            x = x[None]
        if x.shape[1:] != self.input_spec.shape:
            raise RegistryError(
                f"Expected inputs of shape (N, {', '.join(map(str, self.input_spec.shape))}). "
                f"Received: {x.shape}"
            )
        if batch_size < 1:
            raise RegistryError(f"Expected batch_size ≥ 1. Received: {batch_size}")
        if not len(x):
            return np.zeros((0, self.embedding_dim), np.float32)
        parts = [
            np.asarray(model.predict_on_batch(x[i : i + batch_size]), dtype=np.float32)
            for i in range(0, len(x), batch_size)
        ]
        out = np.concatenate(parts)
        if self.input_spec.passthrough:
            return out
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _compact(self, inputs: Any) -> np.ndarray | None:
        """``inputs`` as uint8 images to scale in the graph, or None for model inputs."""
        spec = self.input_spec
        if spec.kind != "image" or spec.passthrough:
            return None
        x = np.asarray(inputs)
        return x if x.dtype == np.uint8 else None

    def _compact_model(self) -> Any:
        """The model behind a ``Rescaling`` of uint8 images (built once, on first use)."""
        with self._compact_lock:
            if self._compact_wrapper is None:
                import keras

                spec = self.input_spec
                images = keras.Input(spec.shape, dtype="uint8")
                scaled = keras.layers.Rescaling(spec.scale, spec.offset, dtype=spec.dtype)(images)
                self._compact_wrapper = keras.Model(images, self.model(scaled))
            return self._compact_wrapper

    def embed_payloads(self, payloads: Any, batch_size: int = 256) -> np.ndarray:
        """Convert raw payloads with ``input_spec`` and embed them."""
        return self.embed(self.input_spec.to_model_batch(payloads), batch_size)

    def warmup(self, batch_size: int = 256) -> None:
        """Run a full and a single-item batch so the first real request is not slow
        (of uint8 images too, for an image spec: what embed workers send)."""
        images = self.input_spec.kind == "image" and not self.input_spec.passthrough
        for dtype in (np.float32, np.uint8) if images else (np.float32,):
            for size in {batch_size, 1}:
                self.embed(np.zeros((size, *self.input_spec.shape), dtype), batch_size)


# --- records -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    """A registered version as listed (files not verified).

    Attributes:
        version: ``"v1"``, ``"v2"``…
        path: its directory.
        config: the parsed ``config.json``.
        metrics: the parsed ``metrics.json``.
        created_at: ISO-8601 UTC time of registration.
    """

    version: str
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: str

    @property
    def input_spec(self) -> InputSpec:
        """The input spec saved in the config."""
        return InputSpec.from_dict(self.config["input_spec"])


class Registry:
    """Versioned encoders under ``root`` (created on first write).

    Args:
        root: the registry directory (``Settings.registry_dir`` in the product).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- writing ---------------------------------------------------------------------

    def register(
        self,
        model: Any,
        input_spec: InputSpec,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, bytes] | None = None,
        promote: bool = False,
    ) -> ModelVersion:
        """Save a new version atomically and return it.

        Args:
            model: a Keras model (saved as ``encoder.keras``).
            input_spec: saved under ``input_spec`` in ``config.json``.
            config: more of ``config.json``: embedding size, distance, loss,
                dataset summary… (``version``, ``created_at``, ``format``,
                ``code_version`` and ``input_spec`` are set here).
            metrics: the contents of ``metrics.json``.
            extra_files: more files (name → bytes), e.g. a training plot; plain
                names only, listed in the manifest like the rest.
            promote: make it the active version.

        Raises:
            RegistryError: on an invalid extra file name or a failed write.
        """
        extra = dict(extra_files or {})
        reserved = {MODEL_FILE, CONFIG_FILE, METRICS_FILE, MANIFEST_FILE}
        for name in extra:
            if name in reserved or "/" in name or name.startswith(".") or not name:
                raise RegistryError(
                    f"Invalid extra file name. Expected a plain name other than {sorted(reserved)}."
                    f" Received: {name!r}"
                )
            if name.lower().endswith(_UNSAFE_SUFFIXES):
                raise RegistryError(f"Refusing to store an unsafe file type: {name!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            # Writers hold the lock while writing, so any temp dir left now is a crash's.
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            version = f"v{self._last_id() + 1}"
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            try:
                created_at = _now()
                full_config = {
                    **dict(config or {}),
                    "format": FORMAT_VERSION,
                    "version": version,
                    "created_at": created_at,
                    "input_spec": input_spec.to_dict(),
                    "code_version": code_version(),
                }
                full_config.setdefault("embedding_dim", int(model.output_shape[-1]))
                model.save(tmp / MODEL_FILE)
                write_bytes(tmp / CONFIG_FILE, _json_bytes(full_config))
                write_bytes(tmp / METRICS_FILE, _json_bytes(dict(metrics or {})))
                for name, data in extra.items():
                    write_bytes(tmp / name, data)
                fsync_path(tmp / MODEL_FILE)
                manifest = {
                    "format": FORMAT_VERSION,
                    "version": version,
                    "created_at": created_at,
                    "files": {
                        p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
                        for p in sorted(tmp.iterdir())
                    },
                }
                write_bytes(tmp / MANIFEST_FILE, _json_bytes(manifest))
                publish_dir(tmp, self.root / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("registry.registered", version=version, root=str(self.root))
        if promote:
            self.promote(version)
        return self.get(version)

    def promote(self, version: str) -> None:
        """Make ``version`` the active one (pushed on the rollback stack).

        Raises:
            RegistryError: when the version does not exist.
        """
        self._require(version)
        with self._lock():
            state = self._read_active()
            if state["active"] == version:
                return
            state["stack"].append(version)
            state["active"] = version
            state["history"].append({"action": "promote", "version": version, "at": _now()})
            self._write_active(state)
        log.info("registry.promoted", version=version)

    def rollback(self) -> str:
        """Return to the previously active version and return its id.

        Raises:
            RegistryError: when there is no earlier version to return to.
        """
        with self._lock():
            state = self._read_active()
            if len(state["stack"]) < 2:
                raise RegistryError(
                    "Cannot roll back: expected an earlier promoted version. Received: "
                    f"promotion stack {state['stack']}"
                )
            left = state["stack"].pop()
            state["active"] = state["stack"][-1]
            state["history"].append(
                {"action": "rollback", "version": state["active"], "from": left, "at": _now()}
            )
            self._write_active(state)
        log.info("registry.rolled_back", version=state["active"], previous=left)
        return str(state["active"])

    # --- reading ---------------------------------------------------------------------

    def list(self) -> builtins.list[ModelVersion]:
        """Every registered version, oldest first."""
        return [self.get(v) for v in self._versions()]

    def get(self, version: str | None = None) -> ModelVersion:
        """A version's record (the active one when ``version`` is None).

        Raises:
            RegistryError: when it does not exist or its JSON is unreadable.
        """
        version = version or self._active_or_raise()
        path = self._require(version)
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
            metrics = json.loads((path / METRICS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RegistryError(f"Cannot read version {version}: {e}") from e
        return ModelVersion(
            version=version,
            path=path,
            config=config,
            metrics=metrics,
            created_at=str(config.get("created_at", "")),
        )

    def active(self) -> str | None:
        """The active version id, or None when none was promoted."""
        value = self._read_active()["active"]
        return str(value) if value else None

    def history(self) -> builtins.list[dict[str, Any]]:
        """Every promote and rollback, oldest first."""
        return list(self._read_active()["history"])

    def verify(self, version: str) -> ModelVersion:
        """Check a version's files against its manifest.

        Raises:
            ModelIntegrityError: on a missing, extra, resized or altered file, an
                unsafe file type, or a missing or unreadable manifest.
        """
        path = self._require(version)
        try:
            manifest = json.loads((path / MANIFEST_FILE).read_text())
            recorded = manifest["files"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelIntegrityError(f"Version {version} has no valid manifest: {e}") from None
        present = {p.name for p in path.iterdir()} - {MANIFEST_FILE}
        unsafe = sorted(n for n in present if n.lower().endswith(_UNSAFE_SUFFIXES))
        if unsafe:
            raise ModelIntegrityError(
                f"Version {version} holds unsafe files {unsafe}. Expected a .keras archive only."
            )
        if present != set(recorded):
            raise ModelIntegrityError(
                f"Version {version} files do not match its manifest. Expected: "
                f"{sorted(recorded)}. Received: {sorted(present)}"
            )
        for name, entry in recorded.items():
            file = path / name
            size, digest = file.stat().st_size, sha256_file(file)
            if size != entry.get("size") or digest != entry.get("sha256"):
                raise ModelIntegrityError(
                    f"File {name} of version {version} was altered. Expected sha256 "
                    f"{entry.get('sha256')} ({entry.get('size')} bytes). Received: {digest} "
                    f"({size} bytes)"
                )
        return self.get(version)

    def load(self, version: str | None = None) -> Encoder:
        """Verify and load a version (the active one when None) as an `Encoder`.

        Raises:
            RegistryError: when the version does not exist.
            ModelIntegrityError: when verification fails or the model cannot be
                deserialised safely (e.g. it contains a Lambda layer).
        """
        import keras

        from model import encoders  # noqa: F401 - registers the custom layers

        record = self.verify(version or self._active_or_raise())
        file = record.path / MODEL_FILE
        if not zipfile.is_zipfile(file):
            raise ModelIntegrityError(
                f"{file} is not a .keras archive. Expected the Keras v3 format."
            )
        try:
            keras_model = keras.saving.load_model(file, compile=False, safe_mode=True)
        except Exception as e:  # Keras raises ValueError/TypeError/KeyError alike
            raise ModelIntegrityError(f"Cannot load version {record.version} safely: {e}") from e
        log.info("registry.loaded", version=record.version)
        return Encoder(
            keras_model,
            record.input_spec,
            version=record.version,
            distance=str(record.config.get("distance", "cosine")),
        )

    # --- internals -------------------------------------------------------------------

    def _versions(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p.name)
            for p in self.root.iterdir()
            if p.is_dir() and (m := _VERSION.match(p.name))
        ]
        return [name for _, name in sorted(found)]

    def _last_id(self) -> int:
        ids = [int(v[1:]) for v in self._versions()]
        ids += [
            int(v[1:])
            for entry in self._read_active()["history"]
            for v in (entry.get("version"), entry.get("from"))
            if isinstance(v, str) and _VERSION.match(v)
        ]
        return max(ids, default=0)

    def _require(self, version: str) -> Path:
        if not isinstance(version, str) or not _VERSION.match(version):
            raise RegistryError(f"Invalid version id. Expected v1, v2, …. Received: {version!r}")
        path = self.root / version
        if not path.is_dir():
            raise RegistryError(
                f"Model version {version} not found in {self.root}. "
                f"Available: {self._versions() or 'none'}"
            )
        return path

    def _active_or_raise(self) -> str:
        active = self.active()
        if active is None:
            raise RegistryError(
                f"No active model in {self.root}. Promote a version first "
                "(simstream models promote VERSION) or name one."
            )
        return active

    def _read_active(self) -> dict[str, Any]:
        path = self.root / ACTIVE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {"active": None, "stack": [], "history": []}
        except (OSError, json.JSONDecodeError) as e:
            raise RegistryError(f"Cannot read {path}: {e}") from e
        state.setdefault("stack", [])
        state.setdefault("history", [])
        return dict(state)

    def _write_active(self, state: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / ACTIVE_FILE, _json_bytes(state))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- helpers -----------------------------------------------------------------------


def code_version() -> dict[str, str]:
    """Versions of simstream, Keras, its backend's framework and NumPy (saved with each model)."""
    from importlib.metadata import PackageNotFoundError, version

    import keras

    backend = keras.backend.backend()
    versions = {"keras": keras.__version__, "backend": backend, "numpy": np.__version__}
    for package in ("simstream", backend):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
