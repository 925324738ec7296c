"""A Valkey of the test's own, to stop and restart (never the session's), and a black hole."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

from simstream.settings import Settings
from simstream.stack.process import ChildService, free_port
from simstream.stack.services import valkey_service


class OwnValkey:
    """A Valkey server on a free port that a test may stop and start again.

    Args:
        data_dir: where its data and log go.
    """

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.settings = Settings.load(data_dir=data_dir, valkey_port=self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._service: ChildService | None = None
        self._started = False

    def start(self) -> None:
        """Start (again) on the same port; returns once it answers PING."""
        service = valkey_service(self.settings)
        if self._started:
            # After a stop the port sits in TIME_WAIT: the free-port check (a bind without
            # SO_REUSEADDR) would refuse it, but Valkey itself binds with SO_REUSEADDR.
            service = dataclasses.replace(service, host=None, port=None)
        service.start(self.settings.logs_dir, timeout_s=15)
        self._service = service
        self._started = True

    def stop(self) -> None:
        """Stop it (SIGTERM); its data is lost (no persistence)."""
        if self._service is not None:
            self._service.stop()
            self._service = None


class BlackHole:
    """A TCP server that accepts connections and never answers: a Redis gone slow."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        """Stop accepting and drop every held connection."""
        self._server.close()
        for connection in self._held:
            connection.close()
