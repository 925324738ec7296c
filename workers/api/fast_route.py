"""`FastRoute`: the lookup routes answered without FastAPI's per-request machinery.

The search is a small part of a lookup's server time; a third of the event
loop's time per lookup went to FastAPI's routing, dependency solving and
request objects (profiled in ``docs/benchmarks.md``, "API"). A `FastRoute`
sits first in the app's router, under every middleware (request ids,
budgets, limits, body size) and inside the exception middleware, so a raised
error is answered by the same handlers. It reads the body, checks the read
token and validates the body with the route's own pydantic model, then does
what the documented route does: pin the generation (waiting for a write
token on the loop), search (on the loop when the search cannot wait, see
`Searcher.lookup_now`; else in the thread pool), answer the serialised body.

Whatever it does not accept as is (a Content-Type other than JSON, no valid
read token, a body that is not JSON or fails validation) it hands back to the
documented FastAPI route with the body replayed, so every refusal is the
route's own, byte for byte; the documented route also stays the one in the
OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Match, NoMatchFound, get_route_path
from starlette.types import Message, Receive, Scope, Send

from workers.api.auth import reads
from workers.api.middleware import header
from workers.api.searcher import Reply
from workers.api.state import ApiState
from workers.node.generation import IndexGeneration

_DECLINED = "simstream.fast_route_declined"
_JSON = b"application/json"

Call = Callable[[ApiState, Any, IndexGeneration], Reply]
CallNow = Callable[[ApiState, Any, IndexGeneration], Reply | None]


class FastRoute(BaseRoute):
    """``POST path`` answered directly; see the module docstring.

    Args:
        documented: the documented route (FastAPI's): its path is this route's,
            and its path template labels the request's metrics and access log.
        model: the request body's model.
        call: the blocking work: ``(state, request, generation) -> Reply``.
        now: the same work on the event loop where it cannot wait, else None
            (then ``call`` runs in the thread pool); None: always ``call``.
    """

    def __init__(
        self, documented: APIRoute, model: type[BaseModel], call: Call, now: CallNow | None = None
    ) -> None:
        self.path = documented.path
        self.documented = documented
        self.model = model
        self.call = call
        self.now = now
        self.include_in_schema = False

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """A full match for ``POST path`` not yet declined by this route."""
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and _DECLINED not in scope
            and get_route_path(scope) == self.path
        ):
            return Match.FULL, {"route": self.documented}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        """Not a named route: reverse lookups go to the documented route."""
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request, or hand it to the documented route with its body."""
        body = await _read_body(receive)
        if body is None:  # the client left before sending its body: nobody to answer
            return
        state: ApiState = scope["app"].state.api
        request = self._accepted(state, scope, body)
        if request is None:
            scope[_DECLINED] = True
            await scope["router"].app(scope, _replay(body, receive), send)
            return
        generation = await state.waiter.generation(request.after)
        reply = None if self.now is None else self.now(state, request, generation)
        if reply is None:
            reply = await run_in_threadpool(self.call, state, request, generation)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(reply.body)).encode()),
                    (b"content-type", _JSON),
                    (b"x-cache", reply.cache.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    def _accepted(self, state: ApiState, scope: Scope, body: bytes) -> Any:
        """The validated request, or None when the documented route must answer."""
        if not _json_type(header(scope, "content-type")):
            return None  # FastAPI reads such a body as bytes, and refuses it
        if not reads(state.tokens, header(scope, "authorization")):
            return None
        try:
            return self.model.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError):
            return None


def _json_type(value: str | None) -> bool:
    """Whether a Content-Type is plainly JSON (others are left to the documented route)."""
    return value is not None and value.split(";", 1)[0].strip().lower() == "application/json"


async def _read_body(receive: Receive) -> bytes | None:
    """The request's body; None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then what ``receive`` gives."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
