"""The wire contracts: every message simstream writes to Kafka, and nothing else.

No Kafka clients, no settings: limits are passed in as a `WireLimits`. The
byte format is specified in ``docs/wire.md``.

Modules:
    envelope: the one envelope codec (magic, version, header length, JSON header, body).
    op: `Op`, what a message does to an item.
    reason: `Reason`, the code of every decode failure and unembeddable event.
    limits: `WireLimits`, the size limits.
    payloads: `ImagePayload`, `ArrayPayload`, `VectorPayload`.
    event: `ItemEvent` (topic ``items``) and `decode_result`.
    embedding: `EmbeddingRecord` (topic ``embeddings.<model version>``) and range markers.
    deadletter: `DeadLetter` (the dead-letter topic).
    writetoken: `WriteToken`, where an acknowledged write landed.
"""

from __future__ import annotations

from simstream.wire.deadletter import DeadLetter
from simstream.wire.embedding import EmbeddingRecord
from simstream.wire.envelope import DEAD_LETTER_MAGIC, EMBEDDING_MAGIC, EVENT_MAGIC, VERSION
from simstream.wire.event import ItemEvent, MetadataValue, decode_result
from simstream.wire.limits import WireLimits
from simstream.wire.op import ITEM_OPS, Op
from simstream.wire.payloads import (
    DTYPES,
    IMAGE_FORMATS,
    PAYLOAD_KINDS,
    ArrayPayload,
    ImagePayload,
    Payload,
    VectorPayload,
)
from simstream.wire.reason import Reason
from simstream.wire.writetoken import WriteToken

__all__ = [
    "DEAD_LETTER_MAGIC",
    "DTYPES",
    "EMBEDDING_MAGIC",
    "EVENT_MAGIC",
    "IMAGE_FORMATS",
    "ITEM_OPS",
    "PAYLOAD_KINDS",
    "VERSION",
    "ArrayPayload",
    "DeadLetter",
    "EmbeddingRecord",
    "ImagePayload",
    "ItemEvent",
    "MetadataValue",
    "Op",
    "Payload",
    "Reason",
    "VectorPayload",
    "WireLimits",
    "WriteToken",
    "decode_result",
]
