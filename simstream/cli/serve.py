"""`simstream serve`: the index node + lookup API.

The API runs inside the index node process: the index is in memory, so a
lookup searches the shards without a network hop. Scale reads with more
``serve`` replicas; each builds its own full copy from the embeddings log (no
GPU needed).
"""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from simstream.cli.common import check_topic_layout, exit_on_error, load_settings
from simstream.signals import stop_on_signals


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (SIMSTREAM_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (SIMSTREAM_API_PORT).")] = None,
) -> None:
    """Run the index node and the lookup API in one process.

    Restores the newest snapshot, follows the embeddings log of the active model,
    and serves the API, the search page (/), OpenAPI (/docs) and /metrics. On
    SIGTERM or Ctrl-C the server stops accepting and finishes in-flight requests
    (10 s at most), then the node takes a final snapshot and the process exits 0.

    In production on an address other than loopback it refuses to start (exit 1)
    without a bearer token: set SIMSTREAM_API_READ_TOKENS_FILE and
    SIMSTREAM_API_ADMIN_TOKENS_FILE (or SIMSTREAM_API_READ_TOKENS and
    SIMSTREAM_API_ADMIN_TOKENS).
    """
    settings = load_settings(api_host=host, api_port=port)
    from producers.config import ProducerConfig
    from producers.producer import ItemProducer
    from simstream.kafka import ensure_topics
    from simstream.log import get_logger
    from workers.api import create_app
    from workers.api.auth import ensure_protected
    from workers.api.config import AuthConfig
    from workers.api.server import ThreadedServer
    from workers.cache import CacheConfig, ResultCache, open_result_cache
    from workers.node.config import NodeConfig
    from workers.node.node import IndexNode

    log = get_logger("serve")
    stop = threading.Event()
    with exit_on_error():
        ensure_protected(AuthConfig.from_settings(settings))
        check_topic_layout(settings)
        # Create the topic up front: a first produce that auto-creates it can lose events.
        ensure_topics(settings, [settings.topic_items])
        node = IndexNode(NodeConfig.from_settings(settings))
        node.start()
        cache: ResultCache = open_result_cache(CacheConfig.from_settings(settings))
        producer = ItemProducer(ProducerConfig.from_settings(settings))
        try:
            app = create_app(settings, node, producer=producer, cache=cache)
            server = ThreadedServer(app, settings.api_host, settings.api_port)
            stop_on_signals(stop)
            server.start()
            log.info("serve.started", url=f"http://{settings.api_host}:{settings.api_port}")
            while not stop.wait(0.5) and server.alive:
                pass
            server.stop()
        finally:
            log.info("serve.stopping")
            node.stop()
            producer.flush(10)
            cache.close()
