"""`SourceWatermark`: which source offsets of one ``items`` partition are accounted for.

Embed tasks complete offset ranges in any order and may repeat one (a retried
task, a rebalance). The watermark merges the completed ranges and exposes
``next``: every source offset below it has reached the index (or the dead-letter
topic). A write token ``(partition, offset)`` is visible once ``offset < next``.

A range dead-lettered whole counts as accounted for (waiters move past it) but
is remembered in ``failed`` until a later completion of the same offsets (a
replay) covers it: a re-index does not flip while any is left.
"""

from __future__ import annotations

import bisect
from typing import Any


class SourceWatermark:
    """Contiguous prefix of completed source ranges, plus the ranges above it."""

    def __init__(
        self,
        next_offset: int = 0,
        pending: list[tuple[int, int]] | None = None,
        failed: list[tuple[int, int]] | None = None,
    ) -> None:
        self.next = next_offset
        self._pending: list[tuple[int, int]] = sorted(pending or [])
        self._failed: list[tuple[int, int]] = sorted(failed or [])

    def mark(self, start: int, end: int, dead_lettered: bool = False) -> None:
        """Record that ``[start, end)`` is complete; idempotent, order-free.

        ``dead_lettered``: its events went to the dead-letter topic, not the index.
        """
        if dead_lettered:
            if (start, end) not in self._failed:
                bisect.insort(self._failed, (start, end))
        else:
            self._failed = [(s, e) for s, e in self._failed if not (start <= s and e <= end)]
        if end <= self.next:
            return
        start = max(start, self.next)
        bisect.insort(self._pending, (start, end))
        merged: list[tuple[int, int]] = []
        for s, e in self._pending:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        if merged and merged[0][0] <= self.next:
            self.next = max(self.next, merged[0][1])
            merged.pop(0)
        self._pending = merged

    def covers(self, offset: int) -> bool:
        """Whether source ``offset`` has been accounted for."""
        return offset < self.next

    @property
    def pending(self) -> list[tuple[int, int]]:
        """Completed ranges above the contiguous prefix."""
        return list(self._pending)

    @property
    def failed(self) -> list[tuple[int, int]]:
        """Ranges dead-lettered whole and not completed since."""
        return list(self._failed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state, for snapshots."""
        state: dict[str, Any] = {"next": self.next, "pending": [list(r) for r in self._pending]}
        if self._failed:
            state["failed"] = [list(r) for r in self._failed]
        return state

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceWatermark:
        """Inverse of `to_dict`."""
        return cls(
            int(data["next"]),
            [(int(s), int(e)) for s, e in data.get("pending", [])],
            [(int(s), int(e)) for s, e in data.get("failed", [])],
        )
