"""Wait for a condition with a timeout instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    Raises:
        TimeoutError: naming ``message`` and the last value seen.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"Timed out after {timeout_s} s waiting for {message}; last: {last!r}")
