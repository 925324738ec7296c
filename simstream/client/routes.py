"""`Routes`: every route of `simstream.client.calls` as a method, for both clients.

A `Route` is a descriptor: read from a `Client` it is a function returning the
call's result, read from an `AsyncClient` a coroutine function; either way
with the parameters of the route's function in `calls`. So each route is
listed once here, and its signature once in `calls`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from simstream.client import calls
from simstream.client.calls import Call

if TYPE_CHECKING:
    from simstream.client.async_client import AsyncClient
    from simstream.client.sync_client import Client

P = ParamSpec("P")
T = TypeVar("T")


class Route(Generic[P, T]):
    """One route as a method of a client (see the module docstring).

    Args:
        build: the route's function in `calls`.
    """

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Route[P, T]: ...

    @overload
    def __get__(self, client: Client, owner: type) -> Callable[P, T]: ...

    @overload
    def __get__(self, client: AsyncClient, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, client: Client | AsyncClient | None, owner: type) -> Any:
        return self if client is None else client.bind(self.build)


class Routes:
    """The API's routes as methods; `Client` and `AsyncClient` add how a call is sent."""

    lookup = Route(calls.lookup)
    lookup_batch = Route(calls.lookup_batch)
    classify = Route(calls.classify)
    upsert = Route(calls.upsert)
    upsert_batch = Route(calls.upsert_batch)
    delete = Route(calls.delete)
    get_item = Route(calls.get_item)
    item_image = Route(calls.item_image)
    list_items = Route(calls.list_items)
    sample_items = Route(calls.sample_items)
    count_items = Route(calls.count_items)
    stats = Route(calls.stats)
    models = Route(calls.models)
    retrain = Route(calls.retrain)
    retrain_runs = Route(calls.retrain_runs)
    dead_letters = Route(calls.dead_letters)
    health = Route(calls.health)
    ready = Route(calls.ready)
    metrics = Route(calls.metrics)
