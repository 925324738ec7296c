"""A Valkey of the test's own, to stop and restart (never the session's), and a black hole.

`OwnValkey` can load a Redis ACL file; `CACHE_ACL` is the one production ships
for the cache server, and `cache_user` names the user and password the
deployment's ``.env.example`` gives the cache (the hash in the ACL file is that
password's: ``tests/deploy`` checks that they match).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from simstream.settings import Settings
from simstream.stack.process import ChildService, free_port
from simstream.stack.services import valkey_service

REPO = Path(__file__).resolve().parents[3]
CACHE_ACL = REPO / "deploy" / "redis" / "cache.acl"


def cache_user() -> tuple[str, str]:
    """User and password of ``SIMSTREAM_REDIS_CACHE_URL`` in the deployment's ``.env.example``."""
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if name == "SIMSTREAM_REDIS_CACHE_URL":
            url = urlsplit(value.strip())
            return str(url.username), str(url.password)
    raise LookupError("no SIMSTREAM_REDIS_CACHE_URL in .env.example")


class OwnValkey:
    """A Valkey server on a free port that a test may stop and start again.

    Args:
        data_dir: where its data and log go.
        aclfile: an ACL file to load (`CACHE_ACL`: the production cache's users);
            ``url`` then logs in as the cache user of `cache_user`.
    """

    def __init__(self, data_dir: Path, aclfile: Path | None = None) -> None:
        self.port = free_port()
        self.settings = Settings.load(data_dir=data_dir, valkey_port=self.port)
        self.aclfile = aclfile
        login = "{}:{}@".format(*cache_user()) if aclfile is not None else ""
        self.url = f"redis://{login}127.0.0.1:{self.port}/0"
        self._service: ChildService | None = None
        self._started = False

    def start(self) -> None:
        """Start (again) on the same port; returns once it answers PING."""
        service = valkey_service(self.settings, aclfile=self.aclfile)
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
