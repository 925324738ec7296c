"""`ItemEvent`: an upsert or delete of one item, the record of topic ``items``.

A sized envelope (see `simstream.wire.envelope`) with magic ``SSIE``. Header
(v1): ``id``, ``op`` ("upsert" | "delete"), ``ts`` (event time, epoch ms),
``size``; optional ``label``, ``meta`` (flat object) and, with a payload,
``kind`` ("image" | "array" | "vector") plus ``shape`` and ``dtype`` for
arrays. The body is the payload (see `simstream.wire.payloads`).

Decoding never raises anything but `DecodeError` (whose ``reason`` is one of
`Reason`), so a worker can dead-letter bad input and keep going.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from simstream.errors import DecodeError
from simstream.wire.envelope import EVENT_MAGIC, compact_json, decoding, pack, unpack
from simstream.wire.fields import INT64, header_field, is_int, is_utf8, now_ms, type_name
from simstream.wire.limits import WireLimits
from simstream.wire.op import ITEM_OPS, Op
from simstream.wire.payloads import (
    PAYLOAD_KINDS,
    ImagePayload,
    Payload,
    decode_payload,
    payload_header,
)
from simstream.wire.reason import Reason, invalid

MetadataValue: TypeAlias = str | int | float | bool


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
        if not isinstance(self.id, str) or not self.id or not is_utf8(self.id):
            raise invalid(Reason.BAD_ID, f"Expected a non-empty text id. Received: {self.id!r}")
        if self.op not in ITEM_OPS:
            raise invalid(Reason.UNKNOWN_OP, f"Expected op upsert or delete. Received: {self.op!r}")
        object.__setattr__(self, "op", Op(self.op))
        if self.payload is not None and not isinstance(self.payload, tuple(PAYLOAD_KINDS.values())):
            raise invalid(
                Reason.UNKNOWN_KIND,
                f"Expected an image, array or vector payload. Received: {type_name(self.payload)}",
            )
        if self.op is Op.UPSERT and self.payload is None:
            raise invalid(
                Reason.MISSING_PAYLOAD,
                f"Expected a payload for upsert of {self.id!r}. Received: None",
            )
        if self.op is Op.DELETE and self.payload is not None:
            raise invalid(
                Reason.UNEXPECTED_PAYLOAD,
                f"Expected no payload for delete of {self.id!r}. Received: {self.payload.kind}",
            )
        if self.label is not None and (not isinstance(self.label, str) or not is_utf8(self.label)):
            raise invalid(Reason.BAD_LABEL, f"Expected text or None. Received: {self.label!r}")
        object.__setattr__(self, "metadata", _checked_metadata(self.metadata))
        if not is_int(self.event_time_ms) or not 0 <= self.event_time_ms < INT64:
            raise invalid(
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
            raise invalid(
                Reason.BAD_ID,
                f"Expected an id of at most {limits.max_id_chars} characters. "
                f"Received: {len(self.id)} characters",
            )
        if self.label is not None and len(self.label) > limits.max_id_chars:
            raise invalid(
                Reason.BAD_LABEL,
                f"Expected a label of at most {limits.max_id_chars} characters. "
                f"Received: {len(self.label)} characters",
            )
        size = len(compact_json(self.metadata)) if self.metadata else 2
        if size > limits.max_metadata_bytes:
            raise invalid(
                Reason.METADATA_TOO_LARGE,
                f"Expected metadata of at most {limits.max_metadata_bytes} bytes as JSON. "
                f"Received: {size} bytes",
            )
        if self.payload is not None:
            _check_payload_size(len(self.payload.data), limits)
            if isinstance(self.payload, ImagePayload):
                width, height = self.payload.size
                if width * height > limits.max_image_pixels:
                    raise invalid(
                        Reason.IMAGE_TOO_LARGE,
                        f"Expected at most {limits.max_image_pixels} pixels. "
                        f"Received: {width}x{height}",
                    )

    def encode(self) -> bytes:
        """The sized envelope with magic ``SSIE`` (see the module docstring)."""
        header: dict[str, Any] = {"id": self.id, "op": self.op.value, "ts": self.event_time_ms}
        if self.label is not None:
            header["label"] = self.label
        if self.metadata:
            header["meta"] = self.metadata
        if self.payload is None:
            return pack(EVENT_MAGIC, header, b"")
        return pack(EVENT_MAGIC, {**header, **payload_header(self.payload)}, self.payload.data)

    @classmethod
    def decode(cls, data: bytes, limits: WireLimits | None = None) -> ItemEvent:
        """Parse and validate an envelope against ``limits`` (defaults: `WireLimits()`).

        Raises:
            DecodeError: with a `Reason`, a human detail and the raw bytes.
        """
        limits = limits or WireLimits()
        with decoding(data):
            header, body = unpack(EVENT_MAGIC, data, limits.max_header_bytes)
            _check_payload_size(len(body), limits)
            event = cls(
                header_field(header, "id", str, Reason.BAD_ID),
                header_field(header, "op", str, Reason.UNKNOWN_OP),
                decode_payload(header, body),
                header_field(header, "label", str, Reason.BAD_LABEL, optional=True),
                header_field(header, "meta", dict, Reason.BAD_METADATA, optional=True) or {},
                header_field(header, "ts", int, Reason.BAD_TIME),
            )
            event.check(limits)
        return event


def decode_result(data: bytes, limits: WireLimits | None = None) -> ItemEvent | DecodeError:
    """Decode without raising: bad input is a value (a `DecodeError` keeping the bytes)."""
    try:
        return ItemEvent.decode(data, limits)
    except DecodeError as e:
        return e


def _check_payload_size(size: int, limits: WireLimits) -> None:
    if size > limits.max_payload_bytes:
        raise invalid(
            Reason.PAYLOAD_TOO_LARGE,
            f"Expected a payload of at most {limits.max_payload_bytes} bytes. "
            f"Received: {size} bytes",
        )


def _checked_metadata(metadata: object) -> dict[str, MetadataValue]:
    if not isinstance(metadata, Mapping):
        raise invalid(
            Reason.BAD_METADATA, f"Expected a flat object. Received: {type_name(metadata)}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not is_utf8(key):
            raise invalid(Reason.BAD_METADATA, f"Expected text keys. Received: {key!r}")
        if isinstance(value, str):
            ok = is_utf8(value)
        elif isinstance(value, bool):
            ok = True
        elif isinstance(value, int):
            ok = -INT64 <= value < INT64
        elif isinstance(value, float):
            ok = math.isfinite(value)
        else:
            ok = False
        if not ok:
            raise invalid(
                Reason.BAD_METADATA,
                f"Expected metadata[{key!r}] to be text, a 64-bit int, a finite float or a "
                f"bool. Received: {value!r}",
            )
    return dict(metadata)
