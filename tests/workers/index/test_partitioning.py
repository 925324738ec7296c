from __future__ import annotations

from collections import Counter

import pytest

from workers.index.partitioning import murmur2, partition_for

# Apache Kafka's own vectors (clients UtilsTest.testMurmur2).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_kafkas_reference_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partition_for_clears_the_sign_bit_like_kafka() -> None:
    assert partition_for("21", 1 << 31) == -973932308 & 0x7FFFFFFF


def test_partition_for_is_in_range_and_spreads_ids_evenly() -> None:
    counts = Counter(partition_for(f"item-{i}", 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 850


def test_partition_for_rejects_a_non_positive_partition_count() -> None:
    with pytest.raises(ValueError, match="partitions ≥ 1"):
        partition_for("x", 0)
