"""`ApiState`: what the routes share (settings, node, searcher, cache, producer)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fastapi import Request

from producers.producer import ItemProducer
from simstream.settings import Settings
from workers.api.payloads import PayloadImages
from workers.api.searcher import Searcher
from workers.cache.cache import ResultCache
from workers.node.node import IndexNode


@dataclass
class ApiState:
    """The app's collaborators, built once by `create_app`.

    Attributes:
        settings: the settings.
        node: the index node serving lookups.
        cache: the result cache.
        searcher: lookups over the node.
        images: item images read back from the items topic.
        producer: the items producer, created on the first write when not given.
    """

    settings: Settings
    node: IndexNode
    cache: ResultCache
    searcher: Searcher
    images: PayloadImages
    producer: ItemProducer | None = None
    _owns_producer: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def item_producer(self) -> ItemProducer:
        """The producer of item events (made on first use)."""
        with self._lock:
            if self.producer is None:
                self.producer = ItemProducer(self.settings)
                self._owns_producer = True
            return self.producer

    def close(self) -> None:
        """Flush a producer this state made and close the image reader."""
        with self._lock:
            if self.producer is not None and self._owns_producer:
                self.producer.flush(10.0)
        self.images.close()


def get_state(request: Request) -> ApiState:
    """The app's `ApiState` (a FastAPI dependency)."""
    state: ApiState = request.app.state.api
    return state
