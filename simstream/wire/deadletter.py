"""`DeadLetter`: a record that could not be processed, as produced to the dead-letter topic.

A sized envelope (see `simstream.wire.envelope`) with magic ``SSDL``. Header
(v1): ``topic``, ``partition``, ``offset``, ``reason``, ``detail``, ``ts``,
``raw_size``, ``raw_sha256``, ``size``; the body is the first bytes of the record
that failed, at most `MAX_RAW_BYTES`, so a dead letter always fits a Kafka message
whatever a producer managed to write to ``items``. ``raw_size`` and ``raw_sha256``
describe the whole record; the record itself stays in its topic at its offset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from simstream.errors import DecodeError
from simstream.wire.envelope import DEAD_LETTER_MAGIC, decoding, pack, unpack
from simstream.wire.fields import header_field, now_ms
from simstream.wire.reason import Reason

#: The most bytes of the failed record a dead letter carries.
MAX_RAW_BYTES: Final = 64 * 1024
#: The longest detail a dead letter carries, in characters.
MAX_DETAIL_CHARS: Final = 4096
# Room left for the note that ends a cut detail, so a cut detail is not cut again.
_CUT_NOTE_CHARS: Final = 40
# A dead letter's header holds its detail (at most 4 UTF-8 bytes a character, JSON-escaped).
_MAX_HEADER_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, as produced to the dead-letter topic.

    Built from the whole record, it keeps the first `MAX_RAW_BYTES` of it in
    ``raw`` and the length and SHA-256 of all of it; a detail longer than
    `MAX_DETAIL_CHARS` is cut to that length, ending with a note of how much was left out.

    Attributes:
        source_topic: topic the record came from.
        partition: its partition.
        offset: its offset.
        reason: a short reason code (e.g. a `Reason`).
        raw: the first bytes of the record as read (all of it when short).
        detail: what was expected and received, for humans.
        time_ms: when it was dead-lettered (epoch ms).
        raw_size: the whole record's length (computed from ``raw`` when not given).
        raw_sha256: the whole record's SHA-256, hex (computed from ``raw`` when not given).
    """

    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: bytes = field(repr=False)
    detail: str = ""
    time_ms: int = field(default_factory=now_ms)
    raw_size: int = -1
    raw_sha256: str = ""

    def __post_init__(self) -> None:
        if self.raw_size < 0:
            object.__setattr__(self, "raw_size", len(self.raw))
            object.__setattr__(self, "raw_sha256", hashlib.sha256(self.raw).hexdigest())
        if len(self.raw) > MAX_RAW_BYTES:
            object.__setattr__(self, "raw", self.raw[:MAX_RAW_BYTES])
        if len(self.detail) > MAX_DETAIL_CHARS:
            kept = MAX_DETAIL_CHARS - _CUT_NOTE_CHARS
            cut = f"{self.detail[:kept]}… ({len(self.detail) - kept} more characters)"
            object.__setattr__(self, "detail", cut)

    @property
    def truncated(self) -> bool:
        """Whether ``raw`` holds only a prefix of the record."""
        return len(self.raw) < self.raw_size

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
            "raw_size": self.raw_size,
            "raw_sha256": self.raw_sha256,
        }
        return pack(DEAD_LETTER_MAGIC, header, self.raw)

    @classmethod
    def decode(cls, data: bytes) -> DeadLetter:
        """Parse a dead letter (one without ``raw_size`` describes its body alone).

        Raises:
            DecodeError: with a `Reason`, a human detail and the raw bytes.
        """
        with decoding(data):
            header, body = unpack(DEAD_LETTER_MAGIC, data, max_header=_MAX_HEADER_BYTES)
            raw_size = header_field(header, "raw_size", int, Reason.BAD_HEADER, optional=True)
            return cls(
                source_topic=header_field(header, "topic", str, Reason.BAD_HEADER),
                partition=header_field(header, "partition", int, Reason.BAD_HEADER),
                offset=header_field(header, "offset", int, Reason.BAD_HEADER),
                reason=header_field(header, "reason", str, Reason.BAD_HEADER),
                raw=body,
                detail=header_field(header, "detail", str, Reason.BAD_HEADER, optional=True) or "",
                time_ms=header_field(header, "ts", int, Reason.BAD_HEADER),
                raw_size=-1 if raw_size is None else raw_size,
                raw_sha256=(
                    header_field(header, "raw_sha256", str, Reason.BAD_HEADER, optional=True) or ""
                ),
            )
