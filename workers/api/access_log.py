"""`AccessLogBudget`: at most N access-log lines per second for each route and status.

Writing a log line costs more than refusing a bad request: under a flood of
refused images, one line per request took a fifth of the event loop's time.
So each (route, status) may write ``per_s`` lines a second; requests past that
are counted, not written, and the next line written for that route and status
says how many were left out (``suppressed``). Metrics still count every request
(``simstream_api_request_seconds``). Used on the event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class AccessLogBudget:
    """Which requests get an access-log line.

    Args:
        per_s: most lines per second per route and status (0: none at all).
        clock: the time source (tests).
    """

    def __init__(self, per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self._now = clock
        self._second: dict[tuple[str, int], tuple[int, int, int]] = {}
        """(route, status) → (second, lines written in it, left out since the last line)."""

    def take(self, route: str, status: int) -> int | None:
        """None when this request's line is left out; else how many lines of this route
        and status were left out since the last one written."""
        if self.per_s <= 0:
            return None
        second = int(self._now())
        key = (route, status)
        at, written, left_out = self._second.get(key, (second, 0, 0))
        if at != second:
            at, written = second, 0
        if written >= self.per_s:
            self._second[key] = (at, written, left_out + 1)
            return None
        self._second[key] = (at, written + 1, 0)
        return left_out
