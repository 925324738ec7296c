"""A real index node serving 8×8 digits behind a real uvicorn server, for the client tests.

The node is built as for the API tests (`tests.workers.api.conftest`); the app
runs in uvicorn on a free port with a read and an admin token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from model.registry import Registry
from simstream.stack.local import LocalStack
from simstream.stack.process import free_port
from tests.workers.api.conftest import (
    Served,
    api_settings,
    publish_digits,
    register_cnn,
    start_serving,
)
from workers.api import create_app
from workers.api.server import ThreadedServer

READ_TOKEN = "read-1"
ADMIN_TOKEN = "admin-1"


@dataclass
class Server:
    """The served node and the URL of the API over it."""

    served: Served
    url: str


@pytest.fixture(scope="package")
def server(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uvicorn serving the API of a node that serves every published digit."""
    settings = api_settings(
        stack.settings,
        tmp_path_factory.mktemp("client-node"),
        api_read_tokens=READ_TOKEN,
        api_admin_tokens=ADMIN_TOKEN,
    )
    version = register_cnn(settings)
    encoder = Registry(settings.registry_dir).load(version)
    digits = publish_digits(settings)
    node = start_serving(settings, encoder, digits)
    served = Served(settings, node, version, encoder, digits)
    try:
        port = free_port()
        with ThreadedServer(create_app(settings, node), "127.0.0.1", port):
            yield Server(served, f"http://127.0.0.1:{port}")
    finally:
        node.stop()
