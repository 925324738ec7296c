"""`ApiState`: what the routes share (settings, node, cache and the services over them)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from simstream.settings import Settings
from workers.api.auth import TokenStore
from workers.api.classifier import Classifier
from workers.api.item_service import ItemService
from workers.api.searcher import Searcher
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
    """

    settings: Settings
    node: IndexNode
    cache: ResultCache
    searcher: Searcher
    classifier: Classifier
    items: ItemService
    tokens: TokenStore

    def close(self) -> None:
        """Flush a producer the item service made and close its image reader."""
        self.items.close()


def get_state(request: Request) -> ApiState:
    """The app's `ApiState` (a FastAPI dependency)."""
    state: ApiState = request.app.state.api
    return state
