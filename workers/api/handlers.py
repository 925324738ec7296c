"""Exception handlers: bad input is a 4xx with a message, never a 500.

Every error body is ``{"code": "...", "detail": "...", "request_id": "..."}``
(``code``: a stable `ErrorCode` or wire `Reason`); 422s add ``errors``, one
entry per invalid field. Only a bug reaches the catch-all
(500, logged with its traceback, no internals in the body).
"""

from __future__ import annotations

import math
import random
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from simstream.errors import (
    BusyError,
    DecodeError,
    IndexStoreError,
    InvalidEventError,
    NotReadyError,
    PayloadError,
    RegistryError,
    RequestError,
)
from simstream.log import get_logger
from workers.api.codes import ErrorCode, for_status
from workers.api.limits import sleep_outside
from workers.api.middleware import request_id

log = get_logger("api.errors")
_MAX_SHOWN = 80


async def refusal_delay(most_s: float) -> None:
    """Wait a random time up to ``most_s`` before answering a delayed refusal
    (`RequestError.delayed`): on the event loop, outside the route class's count."""
    if most_s > 0:
        await sleep_outside(random.uniform(0.0, most_s))


def _body(request: Request, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail, **extra, "request_id": request_id(request.scope)}


def _json(
    request: Request,
    status: int,
    detail: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = _body(request, code or for_status(status), detail, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    field = ""
    for part in parts:
        field += f"[{part}]" if part.isdigit() else (f".{part}" if field else part)
    return field or "body"


def _root(field: str) -> str:
    return field.split(".", 1)[0].split("[", 1)[0]


def describe(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """A readable sentence and per-field messages from pydantic errors."""
    items = []
    for error in errors:
        field = _field(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        kind = error.get("type", "")
        if kind == "missing":
            text = f"Missing value for `{field}`. Expected a value. Received: nothing"
        elif kind == "extra_forbidden":
            text = f"Unexpected field `{field}`. Expected only the documented fields"
        elif kind == "json_invalid":
            text = f"Invalid JSON body: {error.get('ctx', {}).get('error', message)}"
        elif kind == "value_error" or field == "body":
            text = message if field == "body" else f"Invalid value for `{field}`. {message}"
        else:
            received = error.get("input")
            if isinstance(received, float) and not math.isfinite(received):
                received = str(received)
            text = f"Invalid value for `{field}`. {message}. Received: {_shown(received)}"
        items.append({"field": field, "message": text})
    summary = items[0]["message"] if items else "Invalid request"
    if len(items) > 1:
        summary += f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''})"
    return summary, items


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        summary, items = describe(list(exc.errors()))
        in_filter = items and all(_root(i["field"]) == "filter" for i in items)
        code = ErrorCode.INVALID_FILTER if in_filter else ErrorCode.INVALID_REQUEST
        return _json(request, 422, summary, code, errors=items)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return _json(request, exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestError)
    async def _request(request: Request, exc: RequestError) -> JSONResponse:
        if exc.delayed:
            await refusal_delay(request.app.state.api.settings.api_refusal_delay_s)
        return _json(request, exc.status, str(exc), exc.code)

    @app.exception_handler(NotReadyError)
    async def _not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return _json(request, 503, str(exc), ErrorCode.NOT_READY, {"Retry-After": retry})

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError) -> JSONResponse:
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return _json(request, 429, str(exc), ErrorCode.RATE_LIMITED, {"Retry-After": retry})

    @app.exception_handler(IndexStoreError)
    async def _index(request: Request, exc: IndexStoreError) -> JSONResponse:
        return _json(request, 422, str(exc), ErrorCode.INVALID_REQUEST)

    @app.exception_handler(DecodeError)
    async def _decode(request: Request, exc: DecodeError) -> JSONResponse:
        return _json(request, 400, exc.detail or exc.reason, exc.reason)

    @app.exception_handler(PayloadError)
    async def _payload(request: Request, exc: PayloadError) -> JSONResponse:
        return _json(request, 422, str(exc), ErrorCode.INVALID_PAYLOAD)

    @app.exception_handler(InvalidEventError)
    async def _invalid(request: Request, exc: InvalidEventError) -> JSONResponse:
        return _json(request, 422, str(exc), exc.reason)

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        log.warning("api.registry_error", error=str(exc))
        detail = f"The model registry cannot serve this request: {exc}"
        return _json(request, 503, detail, ErrorCode.UNAVAILABLE)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled_error", path=request.url.path)
        # Starlette answers a 500 outside the request-id middleware: add the header here.
        rid = request_id(request.scope)
        return _json(
            request,
            500,
            "Internal error; it has been logged with this request id",
            ErrorCode.INTERNAL,
            headers={"X-Request-ID": rid} if rid else None,
        )
