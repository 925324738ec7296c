"""`stop_on_signals`: SIGTERM and SIGINT set the stop event a process's loop waits on."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from simstream.signals import STOP_SIGNALS, stop_on_signals


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    """Put the test process's own handlers back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_a_stop_signal_sets_the_event(restored_handlers: None, signum: int) -> None:
    stop = stop_on_signals()
    assert not stop.is_set()
    os.kill(os.getpid(), signum)
    assert stop.wait(5)


def test_a_given_event_is_the_one_set(restored_handlers: None) -> None:
    mine = threading.Event()
    assert stop_on_signals(mine) is mine
    os.kill(os.getpid(), signal.SIGTERM)
    assert mine.wait(5)


def test_raise_exit_also_ends_the_main_thread_with_status_0(restored_handlers: None) -> None:
    stop = stop_on_signals(raise_exit=True)
    with pytest.raises(SystemExit) as raised:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises as soon as it runs
    assert raised.value.code == 0 and stop.is_set()


class _LogThatIsInterrupted:
    """Fault injection: while the first stop signal is being logged, a second one arrives
    (SIGTERM from an orchestrator and from a wrapper at once). The nested handler must not
    log: the real log stream's lock is held by the interrupted write, so it would hang."""

    def __init__(self) -> None:
        self.calls = 0
        self.writing = threading.Lock()

    def info(self, event: str, **_: object) -> None:
        self.calls += 1
        if not self.writing.acquire(timeout=2):
            raise AssertionError("a nested handler logged while the first was writing")
        try:
            if self.calls == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # the second signal, mid-write
                time.sleep(0.2)  # Python runs the nested handler here
        finally:
            self.writing.release()


def test_a_second_signal_during_the_first_ones_log_line_neither_logs_nor_hangs(
    restored_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simstream.signals

    log = _LogThatIsInterrupted()
    monkeypatch.setattr(simstream.signals, "log", log)
    stop = stop_on_signals()

    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)

    assert stop.is_set()
    assert log.calls == 1
