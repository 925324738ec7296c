"""`WriteToken`: where an acknowledged event landed, as text ``<topic>.p<partition>.o<offset>``.

A batch of writes has one token naming the highest offset of each partition it
wrote to, ``<topic>.p<a>.o<x>.p<b>.o<y>…`` (`WriteToken.encode_all`,
`WriteToken.decode_all`); a single write's token is the case of one partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from simstream.errors import DecodeError
from simstream.wire.fields import INT64
from simstream.wire.reason import Reason

_POSITION = r"\.p(0|[1-9][0-9]{0,9})\.o(0|[1-9][0-9]{0,18})"
_TOKEN = re.compile(r"([A-Za-z0-9._-]{1,249})" + _POSITION)
_POSITIONS = re.compile(r"(?:" + _POSITION + r")+")
_ONE_POSITION = re.compile(_POSITION)
_MANY = re.compile(r"([A-Za-z0-9._-]{1,249}?)((?:" + _POSITION + r")+)")


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
            raise _bad(text, f"Expected a write token like 'items.p3.o1234'. Received: {text!r}")
        return cls(found[1], int(found[2]), int(found[3]))

    @staticmethod
    def encode_all(tokens: Iterable[WriteToken]) -> str:
        """One token covering ``tokens``: the highest offset per partition, by partition.

        Raises:
            ValueError: no tokens, or tokens of different topics.
        """
        highest: dict[int, int] = {}
        topics = set()
        for token in tokens:
            topics.add(token.topic)
            highest[token.partition] = max(token.offset, highest.get(token.partition, -1))
        if len(topics) != 1:
            raise ValueError(
                f"Expected write tokens of one topic. Received: topics {sorted(topics)}"
            )
        return topics.pop() + "".join(f".p{p}.o{highest[p]}" for p in sorted(highest))

    @classmethod
    def decode_all(cls, text: str, topic: str | None = None) -> tuple[WriteToken, ...]:
        """Parse a token of one or more partitions into one `WriteToken` per partition.

        Args:
            text: ``<topic>.p<a>.o<x>[.p<b>.o<y>…]``.
            topic: the expected topic: when ``text`` starts with it, the rest are
                positions (so a topic that itself looks like ``x.p1.o2`` stays whole);
                otherwise the shortest topic followed by positions is read.

        Raises:
            DecodeError: malformed, or a partition named twice.
        """
        found = _MANY.fullmatch(text) if isinstance(text, str) else None
        if found is None:
            raise _bad(text, f"Expected a write token like 'items.p3.o1234'. Received: {text!r}")
        name, rest = found[1], found[2]
        if topic and text.startswith(topic + ".") and _POSITIONS.fullmatch(text, len(topic)):
            name, rest = topic, text[len(topic) :]
        tokens = [cls.decode(f"{name}.p{m[1]}.o{m[2]}") for m in _ONE_POSITION.finditer(rest)]
        if len({t.partition for t in tokens}) != len(tokens):
            raise _bad(text, f"Expected each partition once in a write token. Received: {text!r}")
        return tuple(tokens)


def _bad(text: object, detail: str) -> DecodeError:
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else None
    return DecodeError(Reason.BAD_TOKEN, raw=raw, detail=detail)
