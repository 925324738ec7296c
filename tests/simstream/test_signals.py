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
