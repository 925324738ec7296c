"""Run an `IndexNode` alone in a process until SIGTERM (for crash tests).

Usage: ``python -m tests.workers.node.node_process [STATUS_FILE]`` with
``SIMSTREAM_*`` set. SIGTERM stops it cleanly (final snapshot); SIGKILL is the
crash under test. With ``STATUS_FILE`` the process rewrites that file every few
milliseconds with the serving generation's applied position (see `read_status`)
from the moment a generation serves, so a test can tell from outside that the
node is up and how far it had applied its log when it was killed; and, every
quarter second, the node's `IndexNode.stats` (see `read_stats`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from simstream.errors import NotReadyError
from simstream.log import configure_logging
from simstream.settings import Settings
from workers.node.config import NodeConfig
from workers.node.node import IndexNode

_STATUS_EVERY_S = 0.01
_STATS_EVERY_S = 0.25


def read_status(path: Path) -> dict[int, int]:
    """The next embeddings-log offset per partition the node had applied (empty: none yet)."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {int(p): int(offset) for p, offset in status["next_offsets"].items()}


def read_stats(path: Path) -> dict[str, Any]:
    """The node's last written `IndexNode.stats` (empty: none yet)."""
    try:
        return dict(json.loads(path.read_text()).get("stats") or {})
    except (OSError, ValueError):
        return {}


def _write_status(node: IndexNode, path: Path, stop: threading.Event) -> None:
    tmp = path.with_suffix(".tmp")
    stats: dict[str, Any] = {}
    stats_at = 0.0
    while not stop.wait(_STATUS_EVERY_S):
        try:
            offsets = node.current().index.next_offsets()
        except NotReadyError:
            continue
        if time.monotonic() - stats_at >= _STATS_EVERY_S:
            stats, stats_at = node.stats(), time.monotonic()
        tmp.write_text(json.dumps({"next_offsets": offsets, "stats": stats}))
        os.replace(tmp, path)


def main() -> None:
    """Start the node and wait for SIGTERM."""
    settings = Settings.load()
    configure_logging(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = IndexNode(NodeConfig.from_settings(settings))
    node.start()
    if len(sys.argv) > 1:
        status = threading.Thread(
            target=_write_status, args=(node, Path(sys.argv[1]), stop), daemon=True
        )
        status.start()
    stop.wait()
    node.stop()


if __name__ == "__main__":
    main()
