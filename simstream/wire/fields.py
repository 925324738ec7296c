"""Rules shared by the messages: typed header fields, UTF-8 text, 64-bit integers, time."""

from __future__ import annotations

import time
from typing import Any, Final

from simstream.wire.reason import Reason, invalid

#: 2**63: integers on the wire are signed 64-bit.
INT64: Final = 2**63


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def header_field(
    header: dict[str, Any], name: str, kind: type, reason: Reason, optional: bool = False
) -> Any:
    """``header[name]`` when it has type ``kind`` (None when optional and absent).

    Raises:
        InvalidEventError: with ``reason``, when the field is missing or of another type.
    """
    value = header.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise invalid(
            reason,
            f"Expected header field {name!r} of type {kind.__name__}. Received: {value!r}",
        )
    return value


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_int(value: object) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def type_name(value: object) -> str:
    """The name of ``value``'s type, for error details."""
    return type(value).__name__
