"""Stopping a long-running process cleanly on SIGTERM (an orchestrator) or SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from simstream.log import get_logger

log = get_logger("signals")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(
    stop: threading.Event | None = None, *, raise_exit: bool = False
) -> threading.Event:
    """Make SIGTERM and SIGINT set ``stop`` (a new event when None); return the event.

    Call it from the main thread (only that thread may install handlers). The
    process's loop waits on the event and winds down when it is set.

    Args:
        stop: the event to set.
        raise_exit: also raise ``SystemExit(0)`` in the main thread, for a loop
            that does not wait on the event (Celery beat's service).
    """
    event = stop if stop is not None else threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # A second signal can arrive while the first one's handler is still logging
        # (an orchestrator and a wrapper both send SIGTERM): logging again from the
        # nested handler would wait forever on the log stream's lock. Only the first logs.
        first = not event.is_set()
        event.set()
        if first:
            log.info("process.stop_signal", signal=signal.Signals(signum).name)
        if raise_exit:
            raise SystemExit(0)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    return event
