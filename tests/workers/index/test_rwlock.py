from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from simstream.errors import WouldBlockError
from workers.index.rwlock import RWLock, no_waiting, waiting_allowed


def test_readers_share_the_lock() -> None:
    lock = RWLock()
    inside = threading.Barrier(3, timeout=5)

    def reader() -> None:
        with lock.read():
            inside.wait()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


def test_a_writer_excludes_readers_and_other_writers() -> None:
    lock = RWLock()
    active = {"readers": 0, "writers": 0}
    violations = []
    guard = threading.Lock()

    def enter(kind: str) -> None:
        with guard:
            active[kind] += 1
            if active["writers"] > 1 or (active["writers"] and active["readers"]):
                violations.append(dict(active))

    def leave(kind: str) -> None:
        with guard:
            active[kind] -= 1

    def worker(write: bool) -> None:
        for _ in range(300):
            with lock.write() if write else lock.read():
                enter("writers" if write else "readers")
                time.sleep(0)
                leave("writers" if write else "readers")

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not violations


def test_a_waiting_writer_is_not_starved_by_a_stream_of_readers() -> None:
    lock = RWLock()
    stop = threading.Event()
    wrote = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                time.sleep(0.001)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    time.sleep(0.01)

    def writer() -> None:
        with lock.write():
            wrote.set()

    w = threading.Thread(target=writer)
    w.start()
    assert wrote.wait(5)
    stop.set()
    for t in [*readers, w]:
        t.join(5)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the lock's queue"
        time.sleep(0.001)


def test_readers_waiting_when_a_writer_releases_go_before_the_next_writer() -> None:
    lock = RWLock()
    order: list[str] = []
    lock.acquire_write()

    def reader(name: str) -> None:
        with lock.read():
            order.append(name)
            time.sleep(0.02)

    def writer() -> None:
        with lock.write():
            order.append("writer")

    readers = [threading.Thread(target=reader, args=(f"reader{i}",)) for i in range(2)]
    for t in readers:
        t.start()
    wait_until(lambda: lock._readers_waiting == 2)
    w = threading.Thread(target=writer)
    w.start()
    wait_until(lambda: lock._writers_waiting == 1)
    lock.release_write()
    for t in [*readers, w]:
        t.join(5)
    assert not any(t.is_alive() for t in [*readers, w])
    assert sorted(order[:2]) == ["reader0", "reader1"]
    assert order[2:] == ["writer"]


def test_readers_recent_reports_reader_activity() -> None:
    lock = RWLock()
    assert not lock.readers_recent(0.05)
    with lock.read():
        assert lock.readers_recent(0.0)
    assert lock.readers_recent(10.0)


def test_inside_no_waiting_an_acquisition_that_would_wait_raises_instead() -> None:
    lock = RWLock()
    with no_waiting(), lock.read():  # free: taken at once
        pass
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with lock.write():
            held.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    assert held.wait(5)
    started = time.monotonic()
    with no_waiting(), pytest.raises(WouldBlockError, match="read lock"):
        lock.acquire_read()
    assert time.monotonic() - started < 0.5
    assert waiting_allowed()  # the mode ends with its block
    release.set()
    with lock.read():  # outside it, a reader waits for the writer as before
        pass
    thread.join(5)
    with lock.read(), no_waiting(), pytest.raises(WouldBlockError, match="write lock"):
        lock.acquire_write()
    with lock.write():  # the refused writer left no trace
        pass
