"""`Op`: what a message does to an item, the one vocabulary of producers, ingest and index."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Op(StrEnum):
    """What a message does to its item; the value is the ``op`` string on the wire.

    Item events carry `UPSERT` or `DELETE`; embeddings records carry those and
    `RANGE`, the marker that closes an embed task's range of source offsets.
    """

    UPSERT = "upsert"
    DELETE = "delete"
    RANGE = "range"


#: the ops an `ItemEvent` may carry.
ITEM_OPS: Final = (Op.UPSERT, Op.DELETE)
