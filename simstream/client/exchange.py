"""How a call is carried out, without I/O: retries, backoff, errors, the wait after a write.

`exchange` is a generator shared by the sync and the async client: it yields a
`Request` to send (and is sent back the answer, or the transport error) or a
number of seconds to sleep (and is sent back None), and returns the call's
result. Each client only sends and sleeps in its own way.

Retried: 429 and 503 (their ``Retry-After`` is honoured when longer than the
backoff) and failed connections, with exponential backoff, up to
``RetryPolicy.attempts`` tries; the wait after a write (``Call.then``) retries
503 until ``Call.wait_s`` has passed, since the API answers 503 when a write is
not applied within its own wait. Other answers are never retried: a 4xx
raises at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from simstream.client.calls import Call, Request
from simstream.errors import (
    ApiAuthError,
    ApiBusyError,
    ApiConnectionError,
    ApiError,
    ApiNotFoundError,
    ApiRequestError,
    ApiServerError,
)

T = TypeVar("T")
Outcome = httpx.Response | httpx.TransportError
Step = Request | float
RETRIED = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a request again.

    Attributes:
        attempts: tries in all for one request (1: never retry).
        backoff_s: the first delay; doubled at each retry, with up to 50 % jitter.
        max_backoff_s: the longest delay (a longer ``Retry-After`` still wins).
    """

    attempts: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0

    def delay(self, attempt: int, outcome: Outcome, deadline: float | None) -> float | None:
        """Seconds to wait before trying again after ``outcome``, or None: do not.

        Args:
            attempt: retries so far.
            outcome: the answer, or the transport error.
            deadline: retry until this `time.monotonic` instead of counting attempts.
        """
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in RETRIED:
                return None
        elif not isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout):
            return None  # a request that may have reached the server is not sent twice
        wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        wait *= 1 + random.random() / 2
        wait = max(wait, _retry_after(outcome) or 0.0)
        if deadline is None:
            return wait if attempt + 1 < self.attempts else None
        return wait if time.monotonic() + wait < deadline else None


def exchange(call: Call[T], retry: RetryPolicy) -> Generator[Step, Outcome | None, T]:
    """Carry out ``call`` (see the module docstring); its parsed result.

    Raises:
        ApiError: the API answered an error, or could not be reached (a subclass).
    """
    response = yield from _answered(call.request, retry, None)
    result = call.parse(response)
    follow = call.then(result) if call.then is not None else None
    if follow is not None:
        yield from _answered(follow, retry, time.monotonic() + call.wait_s)
    return result


def _answered(
    request: Request, retry: RetryPolicy, deadline: float | None
) -> Generator[Step, Outcome | None, httpx.Response]:
    attempt = 0
    while True:
        outcome = yield request
        assert outcome is not None
        delay = retry.delay(attempt, outcome, deadline)
        if delay is None:
            if isinstance(outcome, httpx.TransportError):
                raise ApiConnectionError(None, f"{request.method} {request.path}: {outcome!r}")
            if outcome.is_error:
                raise api_error(outcome)
            return outcome
        yield delay
        attempt += 1


def api_error(response: httpx.Response) -> ApiError:
    """The exception of an error answer, with the server's detail, code and request id."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    status = response.status_code
    detail = body.get("detail")
    kind: type[ApiError] = ApiServerError
    if status in RETRIED:
        kind = ApiBusyError
    elif status in (401, 403):
        kind = ApiAuthError
    elif status == 404:
        kind = ApiNotFoundError
    elif status < 500:
        kind = ApiRequestError
    return kind(
        status,
        detail if isinstance(detail, str) else response.text[:500] or response.reason_phrase,
        code=body.get("code"),
        request_id=body.get("request_id") or response.headers.get("X-Request-ID"),
        retry_after_s=_retry_after(response),
    )


def _retry_after(outcome: Outcome) -> float | None:
    if not isinstance(outcome, httpx.Response):
        return None
    value = outcome.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back on the backoff
