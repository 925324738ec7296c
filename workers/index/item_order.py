"""`ItemOrder`: the ids of a shard's live items in sorted order, for listing by pages.

A sorted list of buckets (``sortedcontainers.SortedList``): adding or removing
an id costs O(log n), and finding where a page starts costs O(log n), so a
page of ``limit`` ids costs O(log n + limit) whatever the shard's size. The
order is Python's string order (by code point), the same on every node.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList


class ItemOrder:
    """Sorted ids of live items; the shard keeps it in step with its items.

    Args:
        ids: the ids to start with (any order).
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids = SortedList(ids)

    def add(self, item_id: str) -> None:
        """Add an id that is not held yet."""
        self._ids.add(item_id)

    def discard(self, item_id: str) -> None:
        """Remove an id (nothing happens when it is not held)."""
        self._ids.discard(item_id)

    def after(self, item_id: str | None) -> Iterator[str]:
        """The ids greater than ``item_id`` (all ids when None), in order."""
        if item_id is None:
            return iter(self._ids)
        return iter(self._ids.irange(minimum=item_id, inclusive=(False, True)))

    def __len__(self) -> int:
        return len(self._ids)
