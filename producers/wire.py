"""The wire format: item events, dead letters and write tokens. No Kafka here.

Every message is a binary envelope (integers big-endian)::

    offset  size  field
    0       4     magic: b"SSIE" (item event) or b"SSDL" (dead letter)
    4       1     version: 1
    5       4     H: header length in bytes, unsigned
    9       H     header: one compact JSON object, UTF-8
    9+H     N     body: raw bytes, N = header["size"] (no base64)

Item event header (v1): ``id``, ``op`` ("upsert" | "delete"), ``ts`` (event
time, epoch ms), ``size``; optional ``label``, ``meta`` (flat object) and, with
a payload, ``kind`` ("image" | "array" | "vector") plus ``shape`` and ``dtype``
for arrays. The body is the payload: encoded PNG/JPEG bytes, raw little-endian
array bytes in C order, or little-endian float32 values.

Dead letter header (v1): ``topic``, ``partition``, ``offset``, ``reason``,
``detail``, ``ts``, ``size``; the body is the raw bytes that failed.

Evolution: readers ignore header keys they do not know, so adding an optional
key keeps version 1; anything an old reader would misread bumps the version,
and an unknown version is a `DecodeError`, never a guess.

Decoding never raises anything but `DecodeError` (whose ``reason`` is one of
`Reason`), so a worker can dead-letter bad input and keep going.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from io import BytesIO
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
from PIL import Image

from simstream.errors import DecodeError, InvalidEventError, PayloadError
from simstream.settings import Settings

EVENT_MAGIC: Final = b"SSIE"
DEAD_LETTER_MAGIC: Final = b"SSDL"
VERSION: Final = 1

#: dtypes an `ArrayPayload` may carry; always little-endian on the wire.
DTYPES: Final = ("uint8", "int16", "int32", "float16", "float32", "float64")
_ITEMSIZE: Final = {name: np.dtype(name).itemsize for name in DTYPES}
#: image formats an `ImagePayload` may carry.
IMAGE_FORMATS: Final = ("PNG", "JPEG")

_PREFIX = struct.Struct(">4sBI")
_MAX_NDIM = 32
_INT64 = 2**63

MetadataValue: TypeAlias = str | int | float | bool


class Reason(StrEnum):
    """Why bytes could not be decoded (`DecodeError.reason`) or an event is invalid."""

    BAD_MAGIC = "bad_magic"
    UNKNOWN_VERSION = "unknown_version"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    HEADER_TOO_LARGE = "header_too_large"
    BAD_HEADER = "bad_header"
    BAD_ID = "bad_id"
    UNKNOWN_OP = "unknown_op"
    BAD_LABEL = "bad_label"
    BAD_METADATA = "bad_metadata"
    METADATA_TOO_LARGE = "metadata_too_large"
    BAD_TIME = "bad_time"
    MISSING_PAYLOAD = "missing_payload"
    UNEXPECTED_PAYLOAD = "unexpected_payload"
    UNKNOWN_KIND = "unknown_kind"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_DTYPE = "unknown_dtype"
    BAD_SHAPE = "bad_shape"
    SIZE_MISMATCH = "size_mismatch"
    NON_FINITE = "non_finite"
    BAD_IMAGE = "bad_image"
    IMAGE_TOO_LARGE = "image_too_large"
    BAD_TOKEN = "bad_token"


class Op(StrEnum):
    """What an event does to its item."""

    UPSERT = "upsert"
    DELETE = "delete"


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _invalid(reason: Reason, detail: str) -> InvalidEventError:
    return InvalidEventError(detail, reason=reason)


# --- limits --------------------------------------------------------------------------


@dataclass(frozen=True)
class WireLimits:
    """Size limits every event must respect, on both the producing and consuming side.

    Attributes:
        max_id_chars: longest id (and label) in characters.
        max_payload_bytes: largest payload body in bytes.
        max_metadata_bytes: largest metadata object as compact UTF-8 JSON.
        max_image_pixels: largest decoded image (width × height), a guard against
            decompression bombs.
    """

    max_id_chars: int = 256
    max_payload_bytes: int = 4 * 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_image_pixels: int = 2**25

    @classmethod
    def from_settings(cls, settings: Settings) -> WireLimits:
        """The limits configured by ``SIMSTREAM_MAX_*``."""
        return cls(
            max_id_chars=settings.max_id_chars,
            max_payload_bytes=settings.max_payload_bytes,
            max_metadata_bytes=settings.max_metadata_bytes,
        )

    @property
    def max_header_bytes(self) -> int:
        """A generous bound on an event header (12 bytes per id/label char: JSON escapes)."""
        return 2 * self.max_metadata_bytes + 24 * self.max_id_chars + 4096

    @property
    def max_event_bytes(self) -> int:
        """The largest encoded event these limits admit."""
        return _PREFIX.size + self.max_header_bytes + self.max_payload_bytes


# --- payloads ------------------------------------------------------------------------


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
            raise _invalid(Reason.BAD_IMAGE, f"Expected image bytes. Received: {_type(self.data)}")
        try:
            with Image.open(BytesIO(self.data)) as image:
                image_format, size = image.format, image.size
                image.verify()
        except Exception as e:  # Pillow raises many types on hostile input; all mean "bad".
            raise _invalid(
                Reason.BAD_IMAGE, f"Expected a PNG or JPEG image. Received: {_type(e)}: {e}"
            ) from None
        if image_format not in IMAGE_FORMATS:
            raise _invalid(
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
            raise _invalid(
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

    def to_array(self) -> np.ndarray:
        """Decode to uint8: HxW for grayscale, HxWxC (C = 2, 3 or 4) otherwise.

        Palette images become RGB (RGBA with transparency); 1-bit, 16-bit and
        float images become 8-bit grayscale; other modes become RGB.

        Raises:
            PayloadError: the pixels cannot be decoded.
        """
        try:
            with Image.open(BytesIO(self.data)) as image:
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
            raise _invalid(Reason.BAD_HEADER, f"Expected bytes. Received: {_type(self.data)}")
        if self.dtype not in DTYPES:
            raise _invalid(
                Reason.UNKNOWN_DTYPE, f"Expected a dtype in {DTYPES}. Received: {self.dtype!r}"
            )
        shape = self.shape
        if (
            not isinstance(shape, tuple | list)
            or not 1 <= len(shape) <= _MAX_NDIM
            or not all(_is_int(n) and n >= 1 for n in shape)
        ):
            raise _invalid(
                Reason.BAD_SHAPE,
                f"Expected 1 to {_MAX_NDIM} axes, each a positive integer. Received: {shape!r}",
            )
        object.__setattr__(self, "shape", tuple(shape))
        expected = math.prod(shape) * _ITEMSIZE[self.dtype]
        if expected != len(self.data):
            raise _invalid(
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
            raise _invalid(
                Reason.UNKNOWN_DTYPE, f"Expected a dtype in {DTYPES}. Received: {name!r}"
            )
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
            raise _invalid(Reason.BAD_HEADER, f"Expected bytes. Received: {_type(self.data)}")
        if not self.data or len(self.data) % 4:
            raise _invalid(
                Reason.SIZE_MISMATCH,
                "Expected a positive multiple of 4 bytes (float32). "
                f"Received: {len(self.data)} bytes",
            )
        if not np.isfinite(self.to_array()).all():
            raise _invalid(Reason.NON_FINITE, "Expected finite values. Received: NaN or Inf")

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> VectorPayload:
        """Convert a 1-d sequence of numbers to float32."""
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise _invalid(Reason.BAD_SHAPE, f"Expected a list of numbers. Received: {e}") from e
        if array.ndim != 1:
            raise _invalid(
                Reason.BAD_SHAPE, f"Expected a 1-d vector. Received: shape {array.shape}"
            )
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


# --- item events ---------------------------------------------------------------------


@dataclass(frozen=True)
class ItemEvent:
    """An upsert or delete of one item: the record of topic ``items``, keyed by id.

    Construction checks every rule that needs no limits and raises
    `InvalidEventError`; `check` adds the configured limits.

    Attributes:
        id: the item id, non-empty; the Kafka key (UTF-8).
        op: upsert or delete.
        payload: what to embed (upserts), None for deletes.
        label: an optional class label.
        metadata: a flat JSON object of str, int (64-bit), finite float or bool values.
        event_time_ms: when the event was created (epoch ms).
    """

    id: str
    op: Op
    payload: Payload | None = None
    label: str | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    event_time_ms: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or not _utf8(self.id):
            raise _invalid(Reason.BAD_ID, f"Expected a non-empty text id. Received: {self.id!r}")
        try:
            object.__setattr__(self, "op", Op(self.op))
        except (ValueError, TypeError):
            raise _invalid(
                Reason.UNKNOWN_OP, f"Expected op upsert or delete. Received: {self.op!r}"
            ) from None
        if self.payload is not None and not isinstance(self.payload, tuple(PAYLOAD_KINDS.values())):
            raise _invalid(
                Reason.UNKNOWN_KIND,
                f"Expected an image, array or vector payload. Received: {_type(self.payload)}",
            )
        if self.op is Op.UPSERT and self.payload is None:
            raise _invalid(
                Reason.MISSING_PAYLOAD,
                f"Expected a payload for upsert of {self.id!r}. Received: None",
            )
        if self.op is Op.DELETE and self.payload is not None:
            raise _invalid(
                Reason.UNEXPECTED_PAYLOAD,
                f"Expected no payload for delete of {self.id!r}. Received: {self.payload.kind}",
            )
        if self.label is not None and (not isinstance(self.label, str) or not _utf8(self.label)):
            raise _invalid(Reason.BAD_LABEL, f"Expected text or None. Received: {self.label!r}")
        object.__setattr__(self, "metadata", _checked_metadata(self.metadata))
        if not _is_int(self.event_time_ms) or not 0 <= self.event_time_ms < _INT64:
            raise _invalid(
                Reason.BAD_TIME,
                f"Expected event_time_ms as epoch ms ≥ 0. Received: {self.event_time_ms!r}",
            )

    @classmethod
    def upsert(
        cls,
        id: str,
        payload: Payload,
        label: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        event_time_ms: int | None = None,
    ) -> ItemEvent:
        """An event that adds or replaces item ``id``."""
        return cls(
            id,
            Op.UPSERT,
            payload,
            label,
            dict(metadata or {}),
            now_ms() if event_time_ms is None else event_time_ms,
        )

    @classmethod
    def delete(cls, id: str, event_time_ms: int | None = None) -> ItemEvent:
        """An event that removes item ``id``."""
        return cls(
            id, Op.DELETE, event_time_ms=now_ms() if event_time_ms is None else event_time_ms
        )

    @property
    def key(self) -> bytes:
        """The Kafka key: the id in UTF-8 (it alone decides the partition)."""
        return self.id.encode("utf-8")

    def check(self, limits: WireLimits) -> None:
        """Raise `InvalidEventError` when the event breaks a size limit."""
        if len(self.id) > limits.max_id_chars:
            raise _invalid(
                Reason.BAD_ID,
                f"Expected an id of at most {limits.max_id_chars} characters. "
                f"Received: {len(self.id)} characters",
            )
        if self.label is not None and len(self.label) > limits.max_id_chars:
            raise _invalid(
                Reason.BAD_LABEL,
                f"Expected a label of at most {limits.max_id_chars} characters. "
                f"Received: {len(self.label)} characters",
            )
        size = len(_json(self.metadata)) if self.metadata else 2
        if size > limits.max_metadata_bytes:
            raise _invalid(
                Reason.METADATA_TOO_LARGE,
                f"Expected metadata of at most {limits.max_metadata_bytes} bytes as JSON. "
                f"Received: {size} bytes",
            )
        if self.payload is not None:
            _check_payload_size(len(self.payload.data), limits)
            if isinstance(self.payload, ImagePayload):
                width, height = self.payload.size
                if width * height > limits.max_image_pixels:
                    raise _invalid(
                        Reason.IMAGE_TOO_LARGE,
                        f"Expected at most {limits.max_image_pixels} pixels. "
                        f"Received: {width}x{height}",
                    )

    def encode(self) -> bytes:
        """The binary envelope (see the module docstring)."""
        header: dict[str, Any] = {"id": self.id, "op": self.op.value, "ts": self.event_time_ms}
        if self.label is not None:
            header["label"] = self.label
        if self.metadata:
            header["meta"] = self.metadata
        body = b""
        if self.payload is not None:
            header["kind"] = self.payload.kind
            if isinstance(self.payload, ArrayPayload):
                header["shape"] = list(self.payload.shape)
                header["dtype"] = self.payload.dtype
            body = self.payload.data
        return _pack(EVENT_MAGIC, header, body)

    @classmethod
    def decode(cls, data: bytes, limits: WireLimits | None = None) -> ItemEvent:
        """Parse and validate an envelope against ``limits`` (defaults: `WireLimits()`).

        Raises:
            DecodeError: with a `Reason`, a human detail and the raw bytes.
        """
        limits = limits or WireLimits()
        try:
            header, body = _unpack(EVENT_MAGIC, data, limits.max_header_bytes)
            _check_payload_size(len(body), limits)
            event = cls(
                _field(header, "id", str, Reason.BAD_ID),
                _field(header, "op", str, Reason.UNKNOWN_OP),
                _payload(header, body),
                _field(header, "label", str, Reason.BAD_LABEL, optional=True),
                _field(header, "meta", dict, Reason.BAD_METADATA, optional=True) or {},
                _field(header, "ts", int, Reason.BAD_TIME),
            )
            event.check(limits)
        except InvalidEventError as e:
            raise DecodeError(e.reason, raw=data, detail=str(e)) from None
        return event


def decode_result(data: bytes, limits: WireLimits | None = None) -> ItemEvent | DecodeError:
    """Decode without raising: bad input is a value (a `DecodeError` keeping the bytes)."""
    try:
        return ItemEvent.decode(data, limits)
    except DecodeError as e:
        return e


def _payload(header: dict[str, Any], body: bytes) -> Payload | None:
    kind = _field(header, "kind", str, Reason.UNKNOWN_KIND, optional=True)
    if kind is None:
        if body:
            raise _invalid(
                Reason.BAD_HEADER, f"Expected no body without a kind. Received: {len(body)} bytes"
            )
        return None
    if kind == ImagePayload.kind:
        return ImagePayload(body)
    if kind == VectorPayload.kind:
        return VectorPayload(body)
    if kind == ArrayPayload.kind:
        shape = _field(header, "shape", list, Reason.BAD_SHAPE)
        dtype = _field(header, "dtype", str, Reason.UNKNOWN_DTYPE)
        return ArrayPayload(body, tuple(shape), dtype)
    raise _invalid(
        Reason.UNKNOWN_KIND, f"Expected kind in {tuple(PAYLOAD_KINDS)}. Received: {kind!r}"
    )


def _check_payload_size(size: int, limits: WireLimits) -> None:
    if size > limits.max_payload_bytes:
        raise _invalid(
            Reason.PAYLOAD_TOO_LARGE,
            f"Expected a payload of at most {limits.max_payload_bytes} bytes. "
            f"Received: {size} bytes",
        )


def _checked_metadata(metadata: object) -> dict[str, MetadataValue]:
    if not isinstance(metadata, Mapping):
        raise _invalid(Reason.BAD_METADATA, f"Expected a flat object. Received: {_type(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not _utf8(key):
            raise _invalid(Reason.BAD_METADATA, f"Expected text keys. Received: {key!r}")
        if isinstance(value, str):
            ok = _utf8(value)
        elif isinstance(value, bool):
            ok = True
        elif isinstance(value, int):
            ok = -_INT64 <= value < _INT64
        elif isinstance(value, float):
            ok = math.isfinite(value)
        else:
            ok = False
        if not ok:
            raise _invalid(
                Reason.BAD_METADATA,
                f"Expected metadata[{key!r}] to be text, a 64-bit int, a finite float or a "
                f"bool. Received: {value!r}",
            )
    return dict(metadata)


# --- dead letters --------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, as produced to the dead-letter topic.

    Attributes:
        source_topic: topic the record came from.
        partition: its partition.
        offset: its offset.
        reason: a short reason code (e.g. a `Reason`).
        raw: the record's bytes as read.
        detail: what was expected and received, for humans.
        time_ms: when it was dead-lettered (epoch ms).
    """

    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: bytes = field(repr=False)
    detail: str = ""
    time_ms: int = field(default_factory=now_ms)

    @classmethod
    def from_error(
        cls, error: DecodeError, source_topic: str, partition: int, offset: int
    ) -> DeadLetter:
        """The dead letter of a record that failed to decode."""
        return cls(
            source_topic, partition, offset, error.reason, error.raw or b"", error.detail or ""
        )

    def encode(self) -> bytes:
        """The binary envelope (see the module docstring)."""
        header = {
            "topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "detail": self.detail,
            "ts": self.time_ms,
        }
        return _pack(DEAD_LETTER_MAGIC, header, self.raw)

    @classmethod
    def decode(cls, data: bytes) -> DeadLetter:
        """Parse a dead letter.

        Raises:
            DecodeError: with a `Reason`, a human detail and the raw bytes.
        """
        try:
            header, body = _unpack(DEAD_LETTER_MAGIC, data, max_header=1 << 20)
            return cls(
                source_topic=_field(header, "topic", str, Reason.BAD_HEADER),
                partition=_field(header, "partition", int, Reason.BAD_HEADER),
                offset=_field(header, "offset", int, Reason.BAD_HEADER),
                reason=_field(header, "reason", str, Reason.BAD_HEADER),
                raw=body,
                detail=_field(header, "detail", str, Reason.BAD_HEADER, optional=True) or "",
                time_ms=_field(header, "ts", int, Reason.BAD_HEADER),
            )
        except InvalidEventError as e:
            raise DecodeError(e.reason, raw=data, detail=str(e)) from None


# --- write tokens --------------------------------------------------------------------

_TOKEN = re.compile(r"([A-Za-z0-9._-]{1,249})\.p(0|[1-9][0-9]{0,9})\.o(0|[1-9][0-9]{0,18})")


@dataclass(frozen=True)
class WriteToken:
    """Where an acknowledged event landed: read-your-writes waits for the index to pass it.

    Encoded as ``<topic>.p<partition>.o<offset>``, e.g. ``items.p3.o1234``:
    URL-safe (Kafka topic names use only ``[A-Za-z0-9._-]``) and parsed from
    the right, so topics with dots work. The index has seen the write once its
    next offset for ``partition`` is greater than ``offset``.

    Attributes:
        topic: the items topic.
        partition: the event's partition.
        offset: the event's offset.
    """

    topic: str
    partition: int
    offset: int

    def encode(self) -> str:
        """The token as text."""
        return f"{self.topic}.p{self.partition}.o{self.offset}"

    @classmethod
    def decode(cls, text: str) -> WriteToken:
        """Parse a token.

        Raises:
            DecodeError: the text is not ``<topic>.p<partition>.o<offset>``.
        """
        found = _TOKEN.fullmatch(text) if isinstance(text, str) else None
        if found is None or int(found[2]) >= 2**31 or int(found[3]) >= _INT64:
            raise DecodeError(
                Reason.BAD_TOKEN,
                raw=text.encode("utf-8", "replace") if isinstance(text, str) else None,
                detail=f"Expected a write token like 'items.p3.o1234'. Received: {text!r}",
            )
        return cls(found[1], int(found[2]), int(found[3]))


# --- envelope ------------------------------------------------------------------------


def _pack(magic: bytes, header: dict[str, Any], body: bytes) -> bytes:
    header = {**header, "size": len(body)}
    encoded = _json(header)
    return b"".join((_PREFIX.pack(magic, VERSION, len(encoded)), encoded, body))


def _unpack(magic: bytes, data: bytes, max_header: int) -> tuple[dict[str, Any], bytes]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _invalid(Reason.TRUNCATED, f"Expected bytes. Received: {_type(data)}")
    if not isinstance(data, bytes):
        data = bytes(data)
    found = data[: len(magic)]
    if found != magic:
        if len(found) < len(magic) and magic.startswith(found):
            raise _invalid(Reason.TRUNCATED, f"Expected {magic!r}. Received: {found!r}")
        raise _invalid(Reason.BAD_MAGIC, f"Expected magic {magic!r}. Received: {found!r}")
    if len(data) < _PREFIX.size:
        raise _invalid(
            Reason.TRUNCATED,
            f"Expected at least {_PREFIX.size} bytes. Received: {len(data)} bytes",
        )
    _, version, header_size = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise _invalid(
            Reason.UNKNOWN_VERSION, f"Expected version {VERSION}. Received: version {version}"
        )
    if header_size > max_header:
        raise _invalid(
            Reason.HEADER_TOO_LARGE,
            f"Expected a header of at most {max_header} bytes. Received: {header_size} bytes",
        )
    end = _PREFIX.size + header_size
    if len(data) < end:
        raise _invalid(
            Reason.TRUNCATED,
            f"Expected a {header_size}-byte header. Received: {len(data) - _PREFIX.size} bytes",
        )
    try:
        header = _DECODER.decode(data[_PREFIX.size : end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _invalid(Reason.BAD_HEADER, f"Expected a UTF-8 JSON object. Received: {e}") from None
    if not isinstance(header, dict):
        raise _invalid(
            Reason.BAD_HEADER, f"Expected a JSON object header. Received: {_type(header)}"
        )
    size = _field(header, "size", int, Reason.BAD_HEADER)
    body = data[end:]
    if size < 0 or len(body) < size:
        raise _invalid(
            Reason.TRUNCATED, f"Expected a {size}-byte body. Received: {len(body)} bytes"
        )
    if len(body) > size:
        raise _invalid(
            Reason.TRAILING_BYTES,
            f"Expected a {size}-byte body. Received: {len(body) - size} bytes more",
        )
    return header, body


def _field(
    header: dict[str, Any], name: str, kind: type, reason: Reason, optional: bool = False
) -> Any:
    value = header.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _invalid(
            reason,
            f"Expected header field {name!r} of type {kind.__name__}. Received: {value!r}",
        )
    return value


def _json(value: object) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Made once: json.dumps/loads with options build a new encoder/decoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type(value: object) -> str:
    return type(value).__name__
