"""`ApiState`: what the routes share (settings, node, cache and the services over them)."""

from __future__ import annotations

from dataclasses import dataclass

from anyio import CapacityLimiter
from fastapi import Request

from simstream.settings import Settings
from workers.api.auth import TokenStore
from workers.api.classifier import Classifier
from workers.api.end_offsets import PartitionEnds
from workers.api.item_service import ItemService
from workers.api.searcher import Searcher
from workers.api.waits import WriteWaiter
from workers.cache.cache import ResultCache
from workers.node.node import IndexNode


@dataclass
class ApiState:
    """The app's collaborators, built once by `create_app`.

    Attributes:
        settings: the settings (auth tokens, Celery, retrain runs).
        node: the index node serving lookups.
        cache: the result cache.
        searcher: lookups and batches over the node.
        classifier: classification over the searcher.
        items: item writes and reads.
        tokens: the bearer tokens of each scope (re-read from their files).
        waiter: pins a request's generation, waiting for its write token first.
        ends: the items topic's end offsets (write tokens past them are refused).
        wait_pool: the limiter of the small pool blocking waits run in (image
            reads, end offsets), apart from the pool of request handlers.
    """

    settings: Settings
    node: IndexNode
    cache: ResultCache
    searcher: Searcher
    classifier: Classifier
    items: ItemService
    tokens: TokenStore
    waiter: WriteWaiter
    ends: PartitionEnds
    wait_pool: CapacityLimiter

    def close(self) -> None:
        """Flush a producer the item service made, close its image reader and the probe."""
        self.items.close()
        self.ends.close()


async def get_state(request: Request) -> ApiState:
    """The app's `ApiState` (a FastAPI dependency; async, so it never takes a thread)."""
    state: ApiState = request.app.state.api
    return state
