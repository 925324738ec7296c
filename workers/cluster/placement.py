"""Static placement: which partitions (shards) each index node owns.

Partition ``p`` belongs to partition set ``p % sets``; a node owns exactly the
partitions of its set, and every node of a set holds the same partitions (the
set's replicas). A node's set is given (``SIMSTREAM_PARTITION_SET``) or derived
from a StatefulSet-style ordinal at the end of its id (``index-3`` → set
``3 % sets``), so a restart never moves shards between nodes.
"""

from __future__ import annotations

import re

from simstream.errors import ConfigError

_ORDINAL = re.compile(r"-(\d+)$")


def set_of(partition: int, sets: int) -> int:
    """The partition set that owns ``partition``."""
    return partition % sets


def partitions_of(partition_set: int, sets: int, partitions: int) -> tuple[int, ...]:
    """The partitions of ``partition_set`` among ``partitions`` partitions, ascending.

    Raises:
        ConfigError: the set is outside ``0 .. sets - 1``, or it would own no partition.
    """
    if not 0 <= partition_set < sets:
        raise ConfigError(
            f"Invalid partition set. Expected 0 ≤ set < {sets} (SIMSTREAM_PARTITION_SETS). "
            f"Received: {partition_set}"
        )
    if sets > partitions:
        raise ConfigError(
            f"Invalid SIMSTREAM_PARTITION_SETS. Expected at most {partitions} sets (one "
            f"partition each at least). Received: {sets}"
        )
    return tuple(range(partition_set, partitions, sets))


def derive_set(node_id: str, sets: int, explicit: int | None = None) -> int:
    """The partition set of a node: ``explicit`` when given, else its id's ordinal mod ``sets``.

    An id without a trailing ``-<n>`` ordinal belongs to set 0.
    """
    if explicit is not None:
        return explicit
    match = _ORDINAL.search(node_id)
    return int(match.group(1)) % sets if match else 0
