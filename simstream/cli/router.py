"""`simstream router`: the stateless query router in front of the index nodes."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from simstream.cli.common import exit_on_error, load_settings
from simstream.signals import stop_on_signals


def register(app: typer.Typer) -> None:
    """Add ``router`` to the CLI."""
    app.command("router")(router)


def router(
    host: Annotated[str | None, typer.Option(help="Bind address (SIMSTREAM_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (SIMSTREAM_API_PORT).")] = None,
) -> None:
    """Run the query router: lookups, classification and item reads for the whole cluster.

    It reads the index nodes' records from the coordination Redis, embeds each
    query once with the model version every partition set serves, asks one
    replica of every set (retrying and hedging, SIMSTREAM_ROUTER_HEDGE_MS) and
    merges their answers. It holds no index: run as many as you like. On
    SIGTERM or Ctrl-C it finishes in-flight requests and exits 0.
    """
    settings = load_settings(api_host=host, api_port=port)
    from simstream.log import get_logger
    from workers.api.auth import ensure_protected
    from workers.api.config import AuthConfig
    from workers.api.server import ThreadedServer
    from workers.cache import CacheConfig, open_result_cache
    from workers.router import create_router_app

    log = get_logger("router")
    stop = threading.Event()
    with exit_on_error():
        ensure_protected(AuthConfig.from_settings(settings))
        cache = open_result_cache(CacheConfig.from_settings(settings))
        try:
            app = create_router_app(settings, cache=cache)
            server = ThreadedServer(app, settings.api_host, settings.api_port)
            stop_on_signals(stop)
            server.start()
            log.info("router.started", url=f"http://{settings.api_host}:{settings.api_port}")
            while not stop.wait(0.5) and server.alive:
                pass
            server.stop()
        finally:
            log.info("router.stopping")
            cache.close()
