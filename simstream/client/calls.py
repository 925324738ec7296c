"""The routes of the lookup API as `Call`s: what to send and how to read the answer.

Each function here is one route with typed parameters; `Client` and
`AsyncClient` turn each into a method of the same name and signature, so a
route is described once for both. Bodies mirror the API's JSON (``docs/api.md``);
answers are returned as parsed JSON.
"""

from __future__ import annotations

import base64
import json as jsonlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx

T = TypeVar("T")
Json = dict[str, Any]
Filter = Mapping[str, Any]
"""A lookup filter, e.g. ``{"labels": ["3"], "metadata": {"color": "red"}}``."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to the API.

    Attributes:
        method: the HTTP method.
        path: the path below the base URL.
        params: query parameters (None values are left out).
        json: the JSON body, if any.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None

    @property
    def query(self) -> dict[str, Any]:
        """The query parameters that are set."""
        return {k: v for k, v in (self.params or {}).items() if v is not None}


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """A route call: the request, how to read its answer, and an optional wait after it.

    Attributes:
        request: what to send.
        parse: turns a successful answer into the method's result.
        then: from the result, a request to send next whose answer only says that
            the write is searchable (None: nothing to wait for).
        wait_s: how long that wait may take, retrying 503s (Retry-After honoured).
    """

    request: Request
    parse: Callable[[httpx.Response], T]
    then: Callable[[T], Request | None] | None = None
    wait_s: float = 60.0


def connection(base_url: str, token: str | None, timeout_s: float) -> dict[str, Any]:
    """The arguments of an httpx client of the API: base URL, bearer token, timeout."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": base_url, "headers": headers, "timeout": timeout_s}


def _json(response: httpx.Response) -> Json:
    body: Json = response.json()
    return body


def _bytes(response: httpx.Response) -> bytes:
    return response.content


def _text(response: httpx.Response) -> str:
    return response.text


def _encoded(value: Filter | None) -> str | None:
    return None if value is None else jsonlib.dumps(dict(value), separators=(",", ":"))


def _image(image: bytes | str | None) -> str | None:
    """An image as the API takes it: bytes are base64-encoded, text is sent as is."""
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    return image


def _list(array: Any) -> Any:
    """Nested lists of an array-like (NumPy arrays too)."""
    return array.tolist() if hasattr(array, "tolist") else array


def _query(query: Query) -> Json:
    encoded = {
        "image": _image(query.get("image")),
        "array": _list(query.get("array")),
        "vector": _list(query.get("vector")),
    }
    given = {**query, **{k: v for k, v in encoded.items() if v is not None}}
    return {k: v for k, v in given.items() if v is not None}


def _options(k: int, ef: int | None, filter: Filter | None, fresh: bool, after: str | None) -> Json:
    given = {"k": k, "ef": ef, "filter": None if filter is None else dict(filter), "after": after}
    return {**{n: v for n, v in given.items() if v is not None}, "fresh": fresh}


def _upsert(
    id: str,
    image: bytes | str | None,
    array: Any,
    label: str | None,
    metadata: Mapping[str, str | int | float | bool] | None,
) -> Json:
    body = {"id": id, "image": _image(image), "array": _list(array), "label": label}
    return {**{k: v for k, v in body.items() if v is not None}, "metadata": dict(metadata or {})}


def _visible(token: str | None) -> Request | None:
    """The wait for a write token: a count that answers once the write is applied."""
    return None if token is None else Request("GET", "/v1/items/count", {"after": token})


# --- lookups -------------------------------------------------------------------------


class ArrayLike(Protocol):
    """Anything with ``tolist`` (a NumPy array)."""

    def tolist(self) -> Any:
        """The values as nested lists."""


class Query(TypedDict, total=False):
    """What a single query searches with: exactly one of the four."""

    vector: Sequence[float] | ArrayLike
    image: bytes | str
    array: Any
    id: str


def lookup(
    *,
    k: int = 10,
    ef: int | None = None,
    filter: Filter | None = None,
    fresh: bool = False,
    after: str | None = None,
    **query: Unpack[Query],
) -> Call[Json]:
    """Nearest neighbours of one query: exactly one of ``vector``, ``image``, ``array``, ``id``.

    ``image`` as bytes (PNG/JPEG) is base64-encoded for you; ``after`` is a write
    token to wait for. Returns the `LookupResponse` body.
    """
    body = {**_query(query), **_options(k, ef, filter, fresh, after)}
    return Call(Request("POST", "/v1/lookup", json=body), _json)


def lookup_batch(
    queries: Sequence[Mapping[str, Any]],
    *,
    k: int = 10,
    ef: int | None = None,
    filter: Filter | None = None,
    fresh: bool = False,
    after: str | None = None,
) -> Call[Json]:
    """Nearest neighbours of many queries (each a dict with one of vector, image, array,
    id; image bytes are base64-encoded for you). Returns the `BatchLookupResponse` body."""
    encoded = [{**q, **({"image": _image(q["image"])} if "image" in q else {})} for q in queries]
    body = {"queries": encoded, **_options(k, ef, filter, fresh, after)}
    return Call(Request("POST", "/v1/lookup/batch", json=body), _json)


def classify(
    *,
    k: int = 10,
    threshold: float | None = None,
    filter: Filter | None = None,
    after: str | None = None,
    vote: Literal["nearest", "majority", "centroid"] | None = None,
    **query: Unpack[Query],
) -> Call[Json]:
    """k-NN label of one query (one of ``vector``, ``image``, ``array``, ``id``), or
    ``"unknown"``; ``vote`` picks the rule (default: the server's, ``nearest``). Returns
    the `ClassifyResponse` body."""
    body = {**_query(query), **_options(k, None, filter, False, after)}
    if threshold is not None:
        body["threshold"] = threshold
    if vote is not None:
        body["vote"] = vote
    return Call(Request("POST", "/v1/classify", json=body), _json)


# --- items ---------------------------------------------------------------------------


def upsert(
    id: str,
    *,
    image: bytes | str | None = None,
    array: Any = None,
    label: str | None = None,
    metadata: Mapping[str, str | int | float | bool] | None = None,
    wait: bool = False,
    wait_s: float = 60.0,
) -> Call[Json]:
    """Publish an upsert (one of image, array). Returns the `WriteAccepted` body.

    With ``wait``, returns once the item is searchable (at most ``wait_s``).
    """
    body = _upsert(id, image, array, label, metadata)
    then = (lambda r: _visible(r["token"])) if wait else None
    return Call(Request("POST", "/v1/items", json=body), _json, then, wait_s)


def upsert_batch(
    items: Sequence[Mapping[str, Any]],
    *,
    wait: bool = False,
    wait_s: float = 60.0,
) -> Call[Json]:
    """Publish many upserts (each a dict with the fields of `upsert`; image bytes are
    base64-encoded for you). Returns the `BatchWriteAccepted` body: per-item ``errors``
    by position, one ``token``. With ``wait``, returns once every accepted item is
    searchable (at most ``wait_s``)."""
    body = {
        "items": [
            _upsert(i["id"], i.get("image"), i.get("array"), i.get("label"), i.get("metadata"))
            for i in items
        ]
    }
    then = (lambda r: _visible(r["token"])) if wait else None
    return Call(Request("POST", "/v1/items/batch", json=body), _json, then, wait_s)


def delete(id: str, *, wait: bool = False, wait_s: float = 60.0) -> Call[Json]:
    """Publish a delete (of an absent id too). Returns the `WriteAccepted` body; with
    ``wait``, once the item is gone from searches (at most ``wait_s``)."""
    then = (lambda r: _visible(r["token"])) if wait else None
    return Call(Request("DELETE", f"/v1/items/{_item_path(id)}"), _json, then, wait_s)


def get_item(id: str, *, vector: bool = False) -> Call[Json]:
    """An indexed item (with its embedding if ``vector``). Returns the `ItemResponse` body."""
    return Call(Request("GET", f"/v1/items/{_item_path(id)}", {"vector": vector}), _json)


def item_image(id: str) -> Call[bytes]:
    """The image an item was published with (PNG or JPEG bytes)."""
    return Call(Request("GET", f"/v1/items/{_item_path(id)}/image"), _bytes)


def list_items(
    *,
    limit: int = 100,
    cursor: str | None = None,
    filter: Filter | None = None,
    vector: bool = False,
    after: str | None = None,
) -> Call[Json]:
    """One page of items in id order; pass its ``next_cursor`` as ``cursor`` for the next
    (None on the last page). Returns the `ItemPage` body."""
    params = {
        "limit": limit,
        "cursor": cursor,
        "filter": _encoded(filter),
        "vector": vector,
        "after": after,
    }
    return Call(Request("GET", "/v1/items", params), _json)


def sample_items(size: int) -> Call[Json]:
    """Items picked at random (demos and smoke tests). Returns the `ItemSample` body."""
    return Call(Request("GET", "/v1/items", {"sample": size}), _json)


def count_items(*, filter: Filter | None = None, after: str | None = None) -> Call[int]:
    """How many indexed items pass ``filter`` (all when None)."""
    params = {"filter": _encoded(filter), "after": after}
    return Call(Request("GET", "/v1/items/count", params), lambda r: int(r.json()["count"]))


# --- operations and health -----------------------------------------------------------


def stats() -> Call[Json]:
    """Index, re-index and cache statistics. Returns the `StatsResponse` body."""
    return Call(Request("GET", "/v1/stats"), _json)


def models() -> Call[Json]:
    """Registered model versions and the active one. Returns the `ModelsResponse` body."""
    return Call(Request("GET", "/v1/models"), _json)


def retrain() -> Call[Json]:
    """Start a retrain (admin). Returns the `RetrainAccepted` body."""
    return Call(Request("POST", "/v1/admin/retrain"), _json)


def retrain_runs(*, limit: int = 50) -> Call[Json]:
    """Recorded retrain runs, newest first (admin). Returns the `RetrainRuns` body."""
    return Call(Request("GET", "/v1/admin/runs", {"limit": limit}), _json)


def dead_letters(
    *,
    reason: str | None = None,
    partition: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Call[Json]:
    """Dead letters, filtered and paged (admin). Returns the `DeadLetters` body."""
    params = {
        "reason": reason,
        "partition": partition,
        "from_offset": from_offset,
        "to_offset": to_offset,
        "limit": limit,
        "cursor": cursor,
    }
    return Call(Request("GET", "/v1/admin/dead-letters", params), _json)


def health() -> Call[Json]:
    """Liveness: the process answers. Returns ``{"status": "ok"}``."""
    return Call(Request("GET", "/healthz"), _json)


def ready() -> Call[Json]:
    """Readiness: a generation serves and has caught up. Returns the `Readiness` body
    (a node not ready answers 503, raised as `ApiBusyError` after the retries)."""
    return Call(Request("GET", "/readyz"), _json)


def metrics() -> Call[str]:
    """The Prometheus metrics, as text."""
    return Call(Request("GET", "/metrics"), _text)


def _item_path(id: str) -> str:
    """An item id as a path segment: every reserved character percent-encoded (a ``/``
    too, so an id ending in ``/image`` is not read as an image request)."""
    return quote(id, safe="")
