"""Static placement: partition p belongs to set p % sets; a node's set from settings or ordinal."""

from __future__ import annotations

import pytest

from simstream.errors import ConfigError
from workers.cluster.placement import derive_set, partitions_of, set_of


def test_the_sets_split_the_partitions_without_overlap_or_gap() -> None:
    sets = [partitions_of(s, 3, 8) for s in range(3)]
    assert sets == [(0, 3, 6), (1, 4, 7), (2, 5)]
    assert all(set_of(p, 3) == s for s, ps in enumerate(sets) for p in ps)


def test_one_set_owns_every_partition() -> None:
    assert partitions_of(0, 1, 4) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("node_id", "explicit", "expected"),
    [
        ("index-0", None, 0),
        ("index-3", None, 1),
        ("simstream-index-10", None, 0),
        ("laptop", None, 0),
        ("index-3", 0, 0),
    ],
)
def test_a_nodes_set_is_the_explicit_one_else_its_ordinal_modulo_the_sets(
    node_id: str, explicit: int | None, expected: int
) -> None:
    assert derive_set(node_id, 2, explicit) == expected


def test_a_set_outside_the_range_or_more_sets_than_partitions_is_refused() -> None:
    with pytest.raises(ConfigError, match="Expected 0 ≤ set < 2"):
        partitions_of(2, 2, 4)
    with pytest.raises(ConfigError, match="Expected at most 4 sets"):
        partitions_of(0, 5, 4)
