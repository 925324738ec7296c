"""`EmbeddingRecord`: one entry of the embeddings log ``embeddings.<model version>``.

The embeddings topic is the index's write-ahead log. Partition p of it holds the
records of partition p of ``items``. Besides upserts and deletes, an embed task
ends each offset range with a `Op.RANGE` marker: the index node learns from it
that every source offset of ``[range_start, range_end)`` has been accounted for
(embedded, deleted or dead-lettered), which gives read-your-writes a contiguous
watermark even across dead-lettered events.

An unsized envelope (see `simstream.wire.envelope`) with magic ``SSR``. Header
(v1): ``op``, ``id``, ``so`` (source offset), ``mv`` (model version), ``t``
(event time, epoch ms); optional ``d`` (vector length), ``l`` (label), ``m``
(metadata), ``rs`` and ``re`` (range markers), ``dl`` (a range marker of a range
that was dead-lettered whole instead of embedded). The body is the vector, ``d``
little-endian float32 values, or empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simstream.wire.envelope import EMBEDDING_MAGIC, decoding, pack, unpack
from simstream.wire.fields import header_field
from simstream.wire.limits import WireLimits
from simstream.wire.op import Op
from simstream.wire.reason import Reason, invalid


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
        dead_lettered: the range was dead-lettered whole, not embedded (range
            markers only): its events are accounted for but not in the index.
    """

    op: Op
    item_id: str
    source_offset: int
    model_version: str
    vector: np.ndarray | None = None
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    event_time_ms: int = 0
    range_start: int = 0
    range_end: int = 0
    dead_lettered: bool = False

    @classmethod
    def range_marker(
        cls, start: int, end: int, model_version: str, dead_lettered: bool = False
    ) -> EmbeddingRecord:
        """The marker that closes the source range ``[start, end)`` (``dead_lettered``:
        the whole range went to the dead-letter topic instead)."""
        return cls(
            op=Op.RANGE,
            item_id="",
            source_offset=end - 1,
            model_version=model_version,
            range_start=start,
            range_end=end,
            dead_lettered=dead_lettered,
        )

    def encode(self) -> bytes:
        """The unsized envelope with magic ``SSR`` (see the module docstring)."""
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
        if self.op is Op.RANGE:
            header["rs"], header["re"] = self.range_start, self.range_end
            if self.dead_lettered:
                header["dl"] = True
        return pack(EMBEDDING_MAGIC, header, body, sized=False)

    @classmethod
    def decode(cls, data: bytes, limits: WireLimits | None = None) -> EmbeddingRecord:
        """Parse an envelope whose header respects ``limits`` (defaults: `WireLimits()`).

        Raises:
            DecodeError: with a `Reason`, a human detail and the raw bytes.
        """
        max_header = (limits or WireLimits()).max_header_bytes
        with decoding(data):
            header, body = unpack(EMBEDDING_MAGIC, data, max_header, sized=False)
            record = cls(
                op=_op(header),
                item_id=header_field(header, "id", str, Reason.BAD_ID),
                source_offset=header_field(header, "so", int, Reason.BAD_HEADER),
                model_version=header_field(header, "mv", str, Reason.BAD_HEADER),
                vector=_vector(header, body),
                label=header_field(header, "l", str, Reason.BAD_LABEL, optional=True),
                metadata=header_field(header, "m", dict, Reason.BAD_METADATA, optional=True) or {},
                event_time_ms=header_field(header, "t", int, Reason.BAD_TIME, optional=True) or 0,
                range_start=header_field(header, "rs", int, Reason.BAD_HEADER, optional=True) or 0,
                range_end=header_field(header, "re", int, Reason.BAD_HEADER, optional=True) or 0,
                dead_lettered=bool(
                    header_field(header, "dl", bool, Reason.BAD_HEADER, optional=True)
                ),
            )
        return record


def _op(header: dict[str, Any]) -> Op:
    op = header_field(header, "op", str, Reason.UNKNOWN_OP)
    try:
        return Op(op)
    except ValueError:
        raise invalid(
            Reason.UNKNOWN_OP, f"Expected op in {[o.value for o in Op]}. Received: {op!r}"
        ) from None


def _vector(header: dict[str, Any], body: bytes) -> np.ndarray | None:
    dim = header_field(header, "d", int, Reason.SIZE_MISMATCH, optional=True)
    if dim is None:
        if body:
            raise invalid(
                Reason.TRAILING_BYTES,
                f"Expected no body without a vector length. Received: {len(body)} bytes",
            )
        return None
    if len(body) != 4 * dim:
        raise invalid(
            Reason.SIZE_MISMATCH,
            f"Expected {dim} float32 values ({4 * dim} bytes). Received: {len(body)} bytes",
        )
    return np.frombuffer(body, dtype="<f4").astype(np.float32)
