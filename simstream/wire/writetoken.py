"""`WriteToken`: where an acknowledged event landed, as text ``<topic>.p<partition>.o<offset>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from simstream.errors import DecodeError
from simstream.wire.fields import INT64
from simstream.wire.reason import Reason

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
        if found is None or int(found[2]) >= 2**31 or int(found[3]) >= INT64:
            raise DecodeError(
                Reason.BAD_TOKEN,
                raw=text.encode("utf-8", "replace") if isinstance(text, str) else None,
                detail=f"Expected a write token like 'items.p3.o1234'. Received: {text!r}",
            )
        return cls(found[1], int(found[2]), int(found[3]))
