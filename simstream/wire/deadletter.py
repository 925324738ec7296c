"""`DeadLetter`: a record that could not be processed, as produced to the dead-letter topic.

A sized envelope (see `simstream.wire.envelope`) with magic ``SSDL``. Header
(v1): ``topic``, ``partition``, ``offset``, ``reason``, ``detail``, ``ts``,
``size``; the body is the raw bytes that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from simstream.errors import DecodeError
from simstream.wire.envelope import DEAD_LETTER_MAGIC, decoding, pack, unpack
from simstream.wire.fields import header_field, now_ms
from simstream.wire.reason import Reason

# A dead letter's header holds its detail, which may quote a whole bad header.
_MAX_HEADER_BYTES: Final = 1 << 20


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
        """The sized envelope with magic ``SSDL`` (see the module docstring)."""
        header = {
            "topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "detail": self.detail,
            "ts": self.time_ms,
        }
        return pack(DEAD_LETTER_MAGIC, header, self.raw)

    @classmethod
    def decode(cls, data: bytes) -> DeadLetter:
        """Parse a dead letter.

        Raises:
            DecodeError: with a `Reason`, a human detail and the raw bytes.
        """
        with decoding(data):
            header, body = unpack(DEAD_LETTER_MAGIC, data, max_header=_MAX_HEADER_BYTES)
            return cls(
                source_topic=header_field(header, "topic", str, Reason.BAD_HEADER),
                partition=header_field(header, "partition", int, Reason.BAD_HEADER),
                offset=header_field(header, "offset", int, Reason.BAD_HEADER),
                reason=header_field(header, "reason", str, Reason.BAD_HEADER),
                raw=body,
                detail=header_field(header, "detail", str, Reason.BAD_HEADER, optional=True) or "",
                time_ms=header_field(header, "ts", int, Reason.BAD_HEADER),
            )
