"""Background rebuilds of one shard's graph: tombstones reclaimed while the shard serves.

When deleted slots pass ``tombstone_ratio`` of all slots (and at least
``min_tombstones``), a thread copies the live vectors (under short shared
holds) into a new graph, replays the ids written meanwhile (tracked as a
*dirty* set), and swaps the new graph in under the exclusive lock with a final
small catch-up. No write is lost and searches continue on the old graph
throughout (see ``docs/index.md``, "Background rebuilds").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from simstream.log import get_logger
from workers.index.config import IndexConfig
from workers.index.graph import Graph
from workers.index.rwlock import RWLock

_REBUILD_CHUNK = 1024
_FINAL_CATCH_UP = 256
_CATCH_UP_ROUNDS = 4


class _AbandonedError(Exception):
    """A rebuild stopped because the shard is closing."""


class Rebuilder:
    """Runs one shard's rebuilds on a background thread, one at a time.

    Args:
        config: the shard's config (thresholds, and the new graph's parameters).
        partition: the shard's partition (names the thread, binds the log).
        lock: the shard's readers–writer lock.
        apply_lock: the shard's apply mutex (serialises batches and the swap).
        graph: returns the shard's current graph.
        swap: installs a new graph (called under the exclusive lock).
    """

    def __init__(
        self,
        config: IndexConfig,
        partition: int,
        lock: RWLock,
        apply_lock: threading.Lock,
        graph: Callable[[], Graph],
        swap: Callable[[Graph], None],
    ) -> None:
        self.config = config
        self.partition = partition
        self._lock = lock
        self._apply_lock = apply_lock
        self._graph = graph
        self._swap = swap
        self._thread: threading.Thread | None = None
        self._dirty: set[str] | None = None
        self._closing = False
        self.completed = 0
        self._log = get_logger("index.shard", partition=partition)

    @property
    def running(self) -> bool:
        """Whether a rebuild is running."""
        return self._thread is not None

    def touch(self, item_ids: Iterable[str]) -> None:
        """Record ids a batch wrote, for a running rebuild to replay (under the apply lock)."""
        if self._dirty is not None:
            self._dirty.update(item_ids)

    def maybe_start(self, force: bool = False) -> None:
        """Start a rebuild if tombstones are due (or ``force``); call under the apply lock."""
        graph = self._graph()
        total = graph.live + graph.tombstones
        due = (
            graph.tombstones >= self.config.min_tombstones
            and graph.tombstones >= self.config.tombstone_ratio * total
        )
        if self._thread is not None or self._closing or not (due or force):
            return
        self._dirty = set()
        self._thread = threading.Thread(
            target=self._run, name=f"index-rebuild-{self.partition}", daemon=True
        )
        self._log.info("index.rebuild_started", live=graph.live, tombstones=graph.tombstones)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a running rebuild; return whether none is running afterwards."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None

    def close(self) -> None:
        """Stop a running rebuild (the old graph stays) and wait for it."""
        self._closing = True
        thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        started = time.perf_counter()
        old = self._graph()
        try:
            with self._lock.read():
                pairs = list(old.slot_of.items())
            new = Graph(self.config, max(self.config.initial_capacity, int(len(pairs) * 1.25) + 16))
            for start in range(0, len(pairs), _REBUILD_CHUNK):
                if self._closing:
                    raise _AbandonedError
                with self._lock.read():
                    part = pairs[start : start + _REBUILD_CHUNK]
                    chunk = [i for i, s in part if old.slot_of.get(i) == s]
                    vectors = old.vectors(chunk)
                new.add(chunk, vectors, 1)
            for round_ in range(_CATCH_UP_ROUNDS + 1):
                with self._apply_lock:
                    dirty = self._dirty or set()
                    self._dirty = set()
                    if len(dirty) <= _FINAL_CATCH_UP or round_ == _CATCH_UP_ROUNDS:
                        # Writers wait (they hold the apply lock); searches go on
                        # until the swap itself.
                        self._catch_up(old, new, dirty)
                        with self._lock.write():
                            self._swap(new)
                        self._dirty = None
                        self.completed += 1
                        break
                if self._closing:
                    raise _AbandonedError
                self._catch_up(old, new, dirty)
            self._log.info(
                "index.rebuild_done",
                live=new.live,
                reclaimed=old.tombstones,
                seconds=round(time.perf_counter() - started, 3),
            )
        except _AbandonedError:
            with self._apply_lock:
                self._dirty = None
        except Exception:
            self._log.exception("index.rebuild_failed")
            with self._apply_lock:
                self._dirty = None
        finally:
            self._thread = None

    def _catch_up(self, old: Graph, new: Graph, dirty: set[str]) -> None:
        """Copy the current state of ``dirty`` ids from the old graph to the new one."""
        with self._lock.read():
            live = [i for i in dirty if i in old.slot_of]
            vectors = old.vectors(live)
        new.add(live, vectors, 1)
        for item_id in dirty.difference(live):
            new.remove(item_id)
