"""Which Kafka partition, and so which shard, an item id belongs to.

The producer keys every event by item id and leaves partitioning to Kafka's
default key partitioner: murmur2 of the key bytes, sign bit cleared, modulo the
partition count (the Java client's default, and librdkafka's with
``partitioner=murmur2_random``). `partition_for` is that function, the one
mapping in simstream that everyone who needs it shares (tests, benchmarks, and
routing of `ShardedIndex.get`).

The index itself never re-derives a partition from an id: a record is applied
to the shard of the partition it was read from, so a producer that used another
partitioner still yields a correct index (lookups by id then fall back to
asking every shard).
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C
_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data``, as a signed 32-bit integer.

    Matches ``org.apache.kafka.common.utils.Utils.murmur2``; the test vectors
    of Kafka's own unit test hold (e.g. ``murmur2(b"21") == -973932308``).
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    body = length - length % 4
    for i in range(0, body, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = length % 4
    if tail == 3:
        h ^= data[body + 2] << 16
    if tail >= 2:
        h ^= data[body + 1] << 8
    if tail >= 1:
        h ^= data[body]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(item_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for key ``item_id``.

    Args:
        item_id: the event key (UTF-8 encoded, as the producer sends it).
        partitions: the topic's partition count.

    Raises:
        ValueError: if ``partitions`` is not positive.
    """
    if partitions < 1:
        raise ValueError(f"Expected partitions ≥ 1. Received: partitions={partitions}")
    return (murmur2(item_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
