"""Payload kinds: what an upsert carries, each with its body encoding.

- ``image``: an encoded PNG or JPEG, carried as is.
- ``array``: raw little-endian bytes in C order, with ``shape`` and ``dtype`` in the header.
- ``vector``: little-endian float32 values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
from PIL import Image

from simstream.errors import PayloadError
from simstream.wire.fields import header_field, is_int, type_name
from simstream.wire.reason import Reason, invalid

#: dtypes an `ArrayPayload` may carry; always little-endian on the wire.
DTYPES: Final = ("uint8", "int16", "int32", "float16", "float32", "float64")
_ITEMSIZE: Final = {name: np.dtype(name).itemsize for name in DTYPES}
#: image formats an `ImagePayload` may carry.
IMAGE_FORMATS: Final = ("PNG", "JPEG")

_MAX_NDIM = 32
_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class ImagePayload:
    """An encoded PNG or JPEG image, carried as is.

    The header is checked at construction (and so at decode time); pixels are
    decoded only by `to_array`.

    Attributes:
        data: the encoded image bytes.
    """

    data: bytes = field(repr=False)
    kind: ClassVar[str] = "image"
    _size: tuple[int, int] = field(init=False, compare=False, default=(0, 0))

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise invalid(
                Reason.BAD_IMAGE, f"Expected image bytes. Received: {type_name(self.data)}"
            )
        try:
            with Image.open(BytesIO(self.data)) as image:
                image_format, size = image.format, image.size
                image.verify()
        except Exception as e:  # Pillow raises many types on hostile input; all mean "bad".
            # Pillow names its file object with an address (<_io.BytesIO object at 0x…>):
            # dropped, so the same bad image always gets the same message.
            detail = _ADDRESS.sub("", str(e))
            raise invalid(
                Reason.BAD_IMAGE,
                f"Expected a PNG or JPEG image. Received: {type_name(e)}: {detail}",
            ) from None
        if image_format not in IMAGE_FORMATS:
            raise invalid(
                Reason.BAD_IMAGE,
                f"Expected an image format in {IMAGE_FORMATS}. Received: {image_format}",
            )
        object.__setattr__(self, "_size", size)

    @classmethod
    def from_array(cls, array: np.ndarray, image_format: str = "PNG") -> ImagePayload:
        """Encode a uint8 HxW, HxWx3 or HxWx4 array as PNG (default) or JPEG."""
        values = np.asarray(array)
        if values.dtype != np.uint8 or not (
            values.ndim == 2 or (values.ndim == 3 and values.shape[2] in (3, 4))
        ):
            raise invalid(
                Reason.BAD_IMAGE,
                "Expected a uint8 array of shape HxW, HxWx3 or HxWx4. "
                f"Received: {values.dtype} {values.shape}",
            )
        buffer = BytesIO()
        Image.fromarray(values).save(buffer, format=image_format)
        return cls(buffer.getvalue())

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), read from the header at construction."""
        return self._size

    def draft_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) `to_array` decodes to when drafted toward ``size`` (width,
        height): a JPEG is decoded at 1/2, 1/4 or 1/8 scale while that stays at least
        ``size``; a PNG at its own size.

        Raises:
            PayloadError: the header cannot be read.
        """
        try:
            with Image.open(BytesIO(self.data)) as image:
                image.draft(image.mode, size)
                return image.size
        except Exception as e:
            raise PayloadError(f"Cannot decode image payload: {e}") from e

    def to_array(self, draft: tuple[int, int] | None = None) -> np.ndarray:
        """Decode to uint8: HxW for grayscale, HxWxC (C = 2, 3 or 4) otherwise.

        Palette images become RGB (RGBA with transparency); 1-bit, 16-bit and
        float images become 8-bit grayscale; other modes become RGB.

        Args:
            draft: decode a JPEG at reduced scale, no smaller than this (width,
                height); see `draft_size`.

        Raises:
            PayloadError: the pixels cannot be decoded.
        """
        try:
            with Image.open(BytesIO(self.data)) as image:
                if draft is not None:
                    image.draft(image.mode, draft)
                image.load()
                converted = _to_8bit(image)
                return np.asarray(converted, dtype=np.uint8)
        except Exception as e:
            raise PayloadError(f"Cannot decode image payload: {e}") from e


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode in ("P", "PA"):
        transparent = image.mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if transparent else "RGB")
    if image.mode in ("1", "F") or image.mode.startswith("I"):
        return image.convert("L")
    return image.convert("RGB")


@dataclass(frozen=True)
class ArrayPayload:
    """A raw n-d array: little-endian bytes in C order, its shape and its dtype.

    Attributes:
        data: the array's bytes.
        shape: the array's shape (at least one axis, every axis ≥ 1).
        dtype: one of `DTYPES`.
    """

    data: bytes = field(repr=False)
    shape: tuple[int, ...]
    dtype: str
    kind: ClassVar[str] = "array"

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise invalid(Reason.BAD_HEADER, f"Expected bytes. Received: {type_name(self.data)}")
        if self.dtype not in DTYPES:
            raise invalid(
                Reason.UNKNOWN_DTYPE, f"Expected a dtype in {DTYPES}. Received: {self.dtype!r}"
            )
        shape = self.shape
        if (
            not isinstance(shape, tuple | list)
            or not 1 <= len(shape) <= _MAX_NDIM
            or not all(is_int(n) and n >= 1 for n in shape)
        ):
            raise invalid(
                Reason.BAD_SHAPE,
                f"Expected 1 to {_MAX_NDIM} axes, each a positive integer. Received: {shape!r}",
            )
        object.__setattr__(self, "shape", tuple(shape))
        expected = math.prod(shape) * _ITEMSIZE[self.dtype]
        if expected != len(self.data):
            raise invalid(
                Reason.SIZE_MISMATCH,
                f"Expected {expected} bytes for shape {tuple(shape)} of {self.dtype}. "
                f"Received: {len(self.data)} bytes",
            )

    @classmethod
    def from_array(cls, array: np.ndarray) -> ArrayPayload:
        """Copy an array of an allowed dtype (any byte order, any memory layout)."""
        values = np.asarray(array)
        name = values.dtype.name
        if name not in DTYPES:
            raise invalid(Reason.UNKNOWN_DTYPE, f"Expected a dtype in {DTYPES}. Received: {name!r}")
        little = values.astype(np.dtype(name).newbyteorder("<"), copy=False)
        return cls(little.tobytes(order="C"), tuple(values.shape), name)

    def to_array(self) -> np.ndarray:
        """A read-only view of the bytes with the payload's shape and dtype."""
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(
            self.shape
        )


@dataclass(frozen=True)
class VectorPayload:
    """A finite float32 vector, carried as little-endian bytes.

    Attributes:
        data: 4 bytes per element, at least one element.
    """

    data: bytes
    kind: ClassVar[str] = "vector"

    def __repr__(self) -> str:
        return f"VectorPayload(dim={self.dim})"

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise invalid(Reason.BAD_HEADER, f"Expected bytes. Received: {type_name(self.data)}")
        if not self.data or len(self.data) % 4:
            raise invalid(
                Reason.SIZE_MISMATCH,
                "Expected a positive multiple of 4 bytes (float32). "
                f"Received: {len(self.data)} bytes",
            )
        if not np.isfinite(self.to_array()).all():
            raise invalid(Reason.NON_FINITE, "Expected finite values. Received: NaN or Inf")

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> VectorPayload:
        """Convert a 1-d sequence of numbers to float32."""
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise invalid(Reason.BAD_SHAPE, f"Expected a list of numbers. Received: {e}") from e
        if array.ndim != 1:
            raise invalid(Reason.BAD_SHAPE, f"Expected a 1-d vector. Received: shape {array.shape}")
        with np.errstate(over="ignore"):
            little = array.astype("<f4")
        return cls(little.tobytes())

    @property
    def dim(self) -> int:
        """Number of elements."""
        return len(self.data) // 4

    def to_array(self) -> np.ndarray:
        """A read-only float32 view of the values."""
        return np.frombuffer(self.data, dtype="<f4")


Payload: TypeAlias = ImagePayload | ArrayPayload | VectorPayload
PAYLOAD_KINDS: Final[dict[str, type[Payload]]] = {
    kind.kind: kind for kind in (ImagePayload, ArrayPayload, VectorPayload)
}


def payload_header(payload: Payload) -> dict[str, Any]:
    """The header fields that describe ``payload``: ``kind``, plus ``shape`` and ``dtype``."""
    if isinstance(payload, ArrayPayload):
        return {"kind": payload.kind, "shape": list(payload.shape), "dtype": payload.dtype}
    return {"kind": payload.kind}


def decode_payload(header: dict[str, Any], body: bytes) -> Payload | None:
    """The payload described by ``header`` (None without ``kind``), its bytes ``body``.

    Raises:
        InvalidEventError: the header or the body breaks a rule of the payload's kind.
    """
    kind = header_field(header, "kind", str, Reason.UNKNOWN_KIND, optional=True)
    if kind is None:
        if body:
            raise invalid(
                Reason.BAD_HEADER, f"Expected no body without a kind. Received: {len(body)} bytes"
            )
        return None
    if kind == ImagePayload.kind:
        return ImagePayload(body)
    if kind == VectorPayload.kind:
        return VectorPayload(body)
    if kind == ArrayPayload.kind:
        shape = header_field(header, "shape", list, Reason.BAD_SHAPE)
        dtype = header_field(header, "dtype", str, Reason.UNKNOWN_DTYPE)
        return ArrayPayload(body, tuple(shape), dtype)
    raise invalid(
        Reason.UNKNOWN_KIND, f"Expected kind in {tuple(PAYLOAD_KINDS)}. Received: {kind!r}"
    )
