"""What a model eats: `InputSpec`, and the one conversion from raw payload to model input.

Raw payloads are what producers publish and datasets hold: images are ``uint8``
arrays of any ``H×W`` (grey) or ``H×W×C`` (grey, RGB or RGBA) with values 0..255;
vectors are 1-D float arrays. `InputSpec.to_model_input` turns one such payload
into exactly the array the encoder was trained on (resized with Pillow when the
size differs, channels converted, scaled to ``raw * scale + offset``), so the
training pipeline and every worker convert payloads the same way.

An `InputSpec` is saved in each registered model's ``config.json``
(`InputSpec.to_dict` / `InputSpec.from_dict`). This module needs NumPy and
Pillow only, never a deep-learning framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from simstream.errors import ModelError, PayloadError

Kind = Literal["image", "vector"]
_KINDS = ("image", "vector")
_RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class InputSpec:
    """The encoder's input and how a raw payload becomes it.

    Attributes:
        kind: ``"image"`` (raw payloads are uint8 images) or ``"vector"`` (raw
            payloads are 1-D float arrays).
        shape: the model input shape without the batch axis: ``(H, W, C)`` for
            images, ``(D,)`` for vectors.
        dtype: dtype of the model input.
        scale: model input = raw value × ``scale`` + ``offset``.
        offset: see ``scale``.
        value_range: the range raw values must lie in (inclusive); images are
            always ``(0, 255)``.
        resample: Pillow filter used when an image's size differs from ``shape``.
        passthrough: the encoder is the identity (a model of your own vectors,
            `Registry.register_vectors`): raw payloads are the embeddings, so they
            must be floating point, and queries must be embeddings, not raw payloads.
    """

    kind: Kind
    shape: tuple[int, ...]
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    value_range: tuple[float, float] = (0.0, 255.0)
    resample: str = field(default="bilinear")
    passthrough: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ModelError(
                f"Invalid value for argument `kind`. Expected one of {_KINDS}. "
                f"Received: kind={self.kind!r}"
            )
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        rank = 3 if self.kind == "image" else 1
        if len(self.shape) != rank or any(s < 1 for s in self.shape):
            raise ModelError(
                f"Invalid value for argument `shape`. Expected {rank} positive sizes for "
                f"kind={self.kind!r}. Received: shape={self.shape}"
            )
        if self.kind == "image" and self.channels not in (1, 3):
            raise ModelError(
                f"Invalid value for argument `shape`. Expected 1 or 3 image channels. "
                f"Received: shape={self.shape}"
            )
        if self.resample not in _RESAMPLE:
            raise ModelError(
                f"Invalid value for argument `resample`. Expected one of {_RESAMPLE}. "
                f"Received: resample={self.resample!r}"
            )
        low, high = self.value_range
        if not low <= high:
            raise ModelError(
                f"Invalid value for argument `value_range`. Expected low ≤ high. "
                f"Received: value_range={self.value_range}"
            )

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def image(cls, height: int, width: int, channels: int = 1) -> InputSpec:
        """Spec of uint8 images scaled to [0, 1]."""
        return cls(kind="image", shape=(height, width, channels))

    @classmethod
    def vector(
        cls,
        dim: int,
        scale: float = 1.0,
        offset: float = 0.0,
        value_range: tuple[float, float] = (-np.inf, np.inf),
    ) -> InputSpec:
        """Spec of float vectors (identity scaling by default)."""
        return cls(kind="vector", shape=(dim,), scale=scale, offset=offset, value_range=value_range)

    def with_image_size(
        self, height: int | None = None, width: int | None = None, channels: int | None = None
    ) -> InputSpec:
        """The same spec for another image size or channel count (for backbones)."""
        if self.kind != "image":
            raise ModelError(f"Expected an image spec to resize. Received: kind={self.kind!r}")
        h, w, c = self.shape
        return replace(self, shape=(height or h, width or w, channels or c))

    # --- derived values --------------------------------------------------------------

    @property
    def channels(self) -> int:
        """Image channels (1 or 3); 0 for vectors."""
        return self.shape[2] if self.kind == "image" else 0

    # --- conversion ------------------------------------------------------------------

    def to_model_input(self, payload: Any) -> np.ndarray:
        """Turn one decoded raw payload into one model input.

        Args:
            payload: for images a uint8 array ``H×W`` or ``H×W×C`` (C in 1, 3, 4) of any
                size; for vectors a 1-D array of ``shape[0]`` finite numbers.

        Returns:
            An array of ``shape`` and ``dtype``.

        Raises:
            PayloadError: when the payload has the wrong rank, channels, length,
                dtype, non-finite values or values outside ``value_range``.
        """
        return self._scale(self._raw(payload))

    def to_compact_input(self, payload: Any) -> np.ndarray:
        """`to_model_input` before scaling, for images: the uint8 image of ``shape``.

        What embed workers hand the encoder: `model.registry.Encoder.embed` scales
        uint8 images on its device, so a batch crosses to an accelerator as bytes,
        four times fewer than float32. Vectors come back as `to_model_input` does.

        Raises:
            PayloadError: as `to_model_input`.
        """
        raw = self._raw(payload)
        return raw if self.kind == "image" else self._scale(raw)

    def _raw(self, payload: Any) -> np.ndarray:
        array = np.asarray(payload)
        return self._image(array) if self.kind == "image" else self._vector(array)

    def to_model_batch(self, payloads: np.ndarray | Iterable[Any]) -> np.ndarray:
        """Convert a batch of raw payloads (an array or an iterable of arrays).

        A NumPy batch whose items already have the right size is converted in one
        vectorised step; anything else goes item by item through `to_model_input`.
        """
        if isinstance(payloads, np.ndarray) and payloads.dtype != object:
            if self.kind == "image" and payloads.ndim == 3 and self.channels == 1:
                batch = payloads[..., None]
            else:
                batch = payloads
            if batch.shape[1:] == self.shape:
                self._check_values(batch)
                return self._scale(batch)
        items = [self.to_model_input(p) for p in payloads]
        if not items:
            return np.zeros((0, *self.shape), dtype=self.dtype)
        return np.stack(items)

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        out = raw.astype(np.float32) * np.float32(self.scale)
        if self.offset:
            out += np.float32(self.offset)
        return out.astype(self.dtype, copy=False)

    def _check_values(self, array: np.ndarray) -> None:
        if self.kind == "image":
            if array.dtype != np.uint8:
                raise PayloadError(
                    f"Invalid image payload. Expected dtype uint8. Received: dtype={array.dtype}"
                )
            return
        if not np.issubdtype(array.dtype, np.number):
            raise PayloadError(
                f"Invalid vector payload. Expected numbers. Received: dtype={array.dtype}"
            )
        if self.passthrough and not np.issubdtype(array.dtype, np.floating):
            raise PayloadError(
                "Invalid vector payload. Expected floating-point values (float16, float32 or "
                f"float64: the vectors are indexed as they are). Received: dtype={array.dtype}"
            )
        if not np.all(np.isfinite(array)):
            raise PayloadError("Invalid vector payload. Expected finite values. Received: NaN/inf")
        low, high = self.value_range
        if array.size and (array.min() < low or array.max() > high):
            raise PayloadError(
                f"Invalid vector payload. Expected values in [{low}, {high}]. "
                f"Received: min={array.min()}, max={array.max()}"
            )

    def _image(self, array: np.ndarray) -> np.ndarray:
        from PIL import Image

        self._check_values(array)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise PayloadError(
                "Invalid image payload. Expected an array H×W or H×W×C with C in (1, 3, 4). "
                f"Received: shape={array.shape}"
            )
        if min(array.shape[:2]) < 1:
            raise PayloadError(f"Invalid image payload. Received an empty image: {array.shape}")
        height, width, channels = self.shape
        source_mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
        target_mode = "L" if channels == 1 else "RGB"
        if array.shape[:2] == (height, width) and source_mode == target_mode:
            out = array
        else:
            image = Image.fromarray(np.ascontiguousarray(array)).convert(target_mode)
            if image.size != (width, height):
                resample = getattr(Image.Resampling, self.resample.upper())
                image = image.resize((width, height), resample=resample)
            out = np.asarray(image)
        return out.reshape(self.shape)

    def _vector(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != 1 or array.shape[0] != self.shape[0]:
            raise PayloadError(
                f"Invalid vector payload. Expected shape ({self.shape[0]},). "
                f"Received: shape={array.shape}"
            )
        self._check_values(array)
        return array

    # --- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``channels`` included for readers; ignored on load)."""
        data = {
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "offset": self.offset,
            "value_range": [_json_float(v) for v in self.value_range],
            "resample": self.resample,
            "channels": self.channels,
        }
        if self.passthrough:
            data["passthrough"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Inverse of `to_dict`.

        Raises:
            ModelError: when a field is missing or invalid.
        """
        try:
            low, high = data.get("value_range", (0.0, 255.0))
            return cls(
                kind=data["kind"],
                shape=tuple(data["shape"]),
                dtype=str(data.get("dtype", "float32")),
                scale=float(data.get("scale", 1.0 / 255.0)),
                offset=float(data.get("offset", 0.0)),
                value_range=(float(low), float(high)),
                resample=str(data.get("resample", "bilinear")),
                passthrough=bool(data.get("passthrough", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(
                f"Invalid input spec. Expected kind, shape and optional dtype, scale, offset, "
                f"value_range, resample. Received: {dict(data)!r} ({e})"
            ) from None


def _json_float(value: float) -> float | str:
    """JSON has no infinity: write it as the string Python's float() reads back."""
    return value if np.isfinite(value) else str(value)
