"""Run an `IndexNode` alone in a process until SIGTERM (for crash tests).

Usage: ``python -m tests.workers.ingest.node_process`` with ``SIMSTREAM_*`` set.
SIGTERM stops it cleanly (final snapshot); SIGKILL is the crash under test.
"""

from __future__ import annotations

import signal
import threading

from simstream.log import configure_logging
from simstream.settings import Settings
from workers.node.config import NodeConfig
from workers.node.node import IndexNode


def main() -> None:
    """Start the node and wait for SIGTERM."""
    settings = Settings.load()
    configure_logging(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = IndexNode(NodeConfig.from_settings(settings))
    node.start()
    stop.wait()
    node.stop()


if __name__ == "__main__":
    main()
