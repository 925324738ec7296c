"""`EmbeddingRecord`: one entry of the embeddings log ``embeddings.<model version>``.

The embeddings topic is the index's write-ahead log. Partition p of it holds the
records of partition p of ``items``. Besides upserts and deletes, an embed task
ends each offset range with a ``RANGE`` marker: the index node learns from it
that every source offset of ``[range_start, range_end)`` has been accounted for
(embedded, deleted or dead-lettered), which gives read-your-writes a contiguous
watermark even across dead-lettered events.

Envelope (all integers big-endian)::

    b"SSR" | version u8 | header length u32 | header (compact JSON) | vector (float32 LE)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from simstream.errors import DecodeError

MAGIC = b"SSR"
VERSION = 1
_PREFIX = struct.Struct(">3sBI")
# Made once: json.dumps/loads with options build a new encoder/decoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_DECODER = json.JSONDecoder()


class RecordOp(StrEnum):
    """What an embeddings record does to the index."""

    UPSERT = "upsert"
    DELETE = "delete"
    RANGE = "range"


@dataclass(frozen=True)
class EmbeddingRecord:
    """An embedded event, a delete, or the end-of-range marker of an embed task.

    Attributes:
        op: upsert, delete or range.
        item_id: the item's id (empty for a range marker).
        source_offset: offset of the event in ``items`` (for a range marker, the
            range's last offset).
        model_version: encoder version that produced the vector.
        vector: float32 embedding (upserts only).
        label: the item's label, if any.
        metadata: flat JSON object.
        event_time_ms: producer time of the source event (epoch ms).
        range_start: first source offset of the range (range markers only).
        range_end: offset after the range (range markers only).
    """

    op: RecordOp
    item_id: str
    source_offset: int
    model_version: str
    vector: np.ndarray | None = None
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    event_time_ms: int = 0
    range_start: int = 0
    range_end: int = 0

    @classmethod
    def range_marker(cls, start: int, end: int, model_version: str) -> EmbeddingRecord:
        """The marker that closes the source range ``[start, end)``."""
        return cls(
            op=RecordOp.RANGE,
            item_id="",
            source_offset=end - 1,
            model_version=model_version,
            range_start=start,
            range_end=end,
        )

    def encode(self) -> bytes:
        """Serialise to the envelope described in the module docstring."""
        header: dict[str, Any] = {
            "op": self.op.value,
            "id": self.item_id,
            "so": self.source_offset,
            "mv": self.model_version,
            "t": self.event_time_ms,
        }
        body = b""
        if self.vector is not None:
            body = np.ascontiguousarray(self.vector, dtype="<f4").tobytes()
            header["d"] = int(self.vector.shape[0])
        if self.label is not None:
            header["l"] = self.label
        if self.metadata:
            header["m"] = self.metadata
        if self.op is RecordOp.RANGE:
            header["rs"], header["re"] = self.range_start, self.range_end
        encoded = _ENCODER.encode(header).encode()
        return _PREFIX.pack(MAGIC, VERSION, len(encoded)) + encoded + body

    @classmethod
    def decode(cls, data: bytes) -> EmbeddingRecord:
        """Parse an envelope.

        Raises:
            DecodeError: with the reason and the raw bytes.
        """
        if len(data) < _PREFIX.size:
            raise DecodeError("truncated record envelope", data)
        magic, version, length = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise DecodeError(f"bad magic: expected {MAGIC!r}, received {magic!r}", data)
        if version != VERSION:
            raise DecodeError(f"unknown record version {version}; expected {VERSION}", data)
        end = _PREFIX.size + length
        try:
            header = _DECODER.decode(data[_PREFIX.size : end].decode())
            op = RecordOp(header["op"])
            vector = None
            if "d" in header:
                vector = np.frombuffer(data[end:], dtype="<f4").astype(np.float32)
                if vector.shape[0] != header["d"]:
                    raise DecodeError(
                        f"vector size mismatch: header says {header['d']}, "
                        f"body holds {vector.shape[0]}",
                        data,
                    )
            return cls(
                op=op,
                item_id=str(header["id"]),
                source_offset=int(header["so"]),
                model_version=str(header["mv"]),
                vector=vector,
                label=header.get("l"),
                metadata=dict(header.get("m", {})),
                event_time_ms=int(header.get("t", 0)),
                range_start=int(header.get("rs", 0)),
                range_end=int(header.get("re", 0)),
            )
        except DecodeError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise DecodeError(f"invalid record header: {e}", data) from None
