"""Listing cursors: the last item id of a page, as opaque URL-safe text.

A cursor is ``c1.`` and the id's UTF-8 bytes in unpadded base64url. It holds
nothing but the id, so the server keeps no state per client and any node of
any generation continues a scan (ids are listed in the same order everywhere).
"""

from __future__ import annotations

import base64
import binascii

from simstream.errors import RequestError

_PREFIX = "c1."
_MAX_CHARS = 4096


def encode_cursor(after: str) -> str:
    """The cursor of a page that ended at item id ``after``."""
    return _PREFIX + base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The item id a cursor continues after.

    Raises:
        RequestError: (400) not a cursor this API wrote.
    """
    text = cursor[len(_PREFIX) :]
    if cursor.startswith(_PREFIX) and text and len(cursor) <= _MAX_CHARS:
        try:
            after = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        except (binascii.Error, ValueError):
            pass
        else:
            if after and encode_cursor(after) == cursor:
                return after
    shown = cursor if len(cursor) <= 80 else cursor[:79] + "…"
    raise RequestError(
        "Invalid value for `cursor`. Expected the `next_cursor` of a previous page of "
        f"GET /v1/items. Received: {shown!r}",
        400,
    )
