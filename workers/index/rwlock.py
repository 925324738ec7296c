"""A phase-fair readers–writer lock: many searches at once, or one writer.

hnswlib must never be written, resized or saved while it is searched, so each
shard guards its index with one of these. Phase-fair means neither side
starves: a waiting writer stops new readers from entering, and when a writer
releases the lock every reader that was waiting at that moment is admitted
before the next writer, even if that writer was already queued. Writers keep
their hold short (see `Shard`), so a reader waits at most about one write slice.

A thread that must never wait (the API's event loop answering a lookup itself)
searches inside `no_waiting`: an acquisition that would wait raises
`WouldBlockError` instead, and the caller searches again elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from simstream.errors import WouldBlockError

_thread = threading.local()


@contextmanager
def no_waiting() -> Iterator[None]:
    """Within the block, this thread's lock acquisitions that would wait raise
    `WouldBlockError` instead of waiting (nesting is allowed)."""
    before = getattr(_thread, "no_wait", False)
    _thread.no_wait = True
    try:
        yield
    finally:
        _thread.no_wait = before


def waiting_allowed() -> bool:
    """False inside `no_waiting`: whoever would wait (for a lock, for other threads)
    must raise `WouldBlockError` instead."""
    return not getattr(_thread, "no_wait", False)


def _would_wait(side: str) -> None:
    if not waiting_allowed():
        raise WouldBlockError(f"The {side} lock is held or awaited by a writer; not waiting.")


class RWLock:
    """Readers–writer lock with phase-fair hand-over between the two sides."""

    def __init__(self) -> None:
        # Held directly (a C-level lock) on the paths that do not wait; the
        # condition shares it for the ones that do.
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._passes = 0
        self._last_read = 0.0

    def acquire_read(self) -> None:
        """Block until no writer holds or (outside a reader phase) waits for the lock."""
        with self._mutex:
            self._last_read = time.monotonic()
            if not self._writer and not self._writers_waiting:
                self._readers += 1
                return
            _would_wait("read")
            self._readers_waiting += 1
            try:
                while self._writer or (self._writers_waiting and not self._passes):
                    self._cond.wait()
                if self._passes:
                    self._passes -= 1
            finally:
                self._readers_waiting -= 1
            self._readers += 1

    def release_read(self) -> None:
        """Leave the read side; the last reader out wakes a waiting writer."""
        with self._mutex:
            self._readers -= 1
            # Only writers wait for the readers to leave.
            if not self._readers and self._writers_waiting:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        """Block until no reader and no other writer holds the lock."""
        with self._mutex:
            if self._writer or self._readers or self._passes:
                _would_wait("write")
            self._writers_waiting += 1
            try:
                while self._writer or self._readers or self._passes:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        """Leave the write side, admitting every reader that was waiting."""
        with self._mutex:
            self._writer = False
            self._passes = self._readers_waiting
            self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    def readers_recent(self, window_s: float) -> bool:
        """Whether a reader holds, waits for, or entered the lock in the last ``window_s``.

        Writers use it to choose short write slices while searches are running.
        """
        with self._mutex:
            return bool(
                self._readers
                or self._readers_waiting
                or time.monotonic() - self._last_read < window_s
            )
