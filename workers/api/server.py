"""`ThreadedServer`: uvicorn serving an app from a background thread.

Off the main thread uvicorn installs no signal handlers, so the owner decides
what a signal does: ``simstream serve`` drains the server, then stops the node
(final snapshot) and exits 0; benchmarks and tests just stop it.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from simstream.errors import ServiceStartError


class ThreadedServer:
    """Serve ``app`` on ``host:port`` in a daemon thread; use as a context manager.

    Args:
        app: the ASGI app (the API, or any other).
        host: address to bind.
        port: port to bind.
        start_timeout_s: how long `start` waits for the server to listen.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, start_timeout_s: float = 30.0) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://{host}:{port}"
        self.start_timeout_s = start_timeout_s
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> None:
        """Start serving; return once the socket listens.

        Raises:
            ServiceStartError: it did not start in time.
        """
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceStartError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        """Whether the server thread still runs."""
        return self._thread.is_alive()

    def stop(self, force: bool = False) -> None:
        """Stop accepting, let in-flight requests finish (or not, with ``force``), wait.

        The app's lifespan shutdown runs before this returns.
        """
        self.server.should_exit = True
        self.server.force_exit = force
        self._thread.join(30)

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
