"""`ClientBudgetMiddleware`: a fair share of the node per client when clients compete.

The node's Python work runs on about one core's worth of interpreter, so a
client that keeps it busy (a closed loop of costly or refused requests, however
cheap each one is) delays everyone else's lookups, and no per-request bound
stops it. Each client therefore has a budget of the node's *CPU time*: a token
bucket holding up to ``burst_s`` CPU-seconds, refilled at ``busy_per_s`` a
second (by default 0.25: a quarter of a core). The process's CPU time is shared out among the
requests in flight as it is spent (processor sharing: between two events, each
request in flight is charged an equal part), so a client with eight requests in
flight pays for eight parts; a request waiting on the event loop for a write
(`charge_waits`) is not in flight and pays nothing. Background work (ingest,
snapshots) spent while requests are in flight is charged to them too: a node
busy with its own work has less to lend.

While clients compete, a client may also hold at most ``max_inflight``
requests at once, waiting ones included: sixty-four requests sent in the same
millisecond cost the event loop sixty-four parses before any budget could see
their cost, so the ones past the cap are refused before their body is read.

A client is the bearer token it presents, when that token is valid (by its
SHA-256 digest: no token is kept), else its address. A client whose bucket is
empty is refused only while another client has been seen (a request of it
starting or ending) within the last ``contended_s``: a node serving one client
lends it everything. A refusal is a 429 with ``Retry-After`` (when the bucket
is back in credit), answered after ``tarpit_s`` so that a client ignoring
``Retry-After`` cannot spin at the node's full rate of refusals; the delay
holds no thread and no route slot.

Probes, metrics, the page and the internal routes belong to no route class and
are never charged.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from workers.api.config import ClientBudgetConfig
from workers.api.limits import route_class
from workers.api.middleware import header, reply
from workers.metrics import API_REJECTED

MAX_CLIENTS = 10_000
"""Buckets kept at most; past it, the full ones (clients idle long enough) are dropped."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: ``budget`` (its client's bucket is empty; credit is
    back in ``retry_s``) or ``held`` (its client holds ``max_inflight`` requests)."""

    reason: str
    retry_s: float


@dataclass(slots=True)
class _Bucket:
    """One client's credit in CPU-seconds, as of ``at`` (monotonic)."""

    level: float
    at: float


class ClientBudgets:
    """The buckets of every client, its requests in flight, and who was seen last.

    Used on the event loop only (no lock).

    Args:
        config: refill rate, burst, contention window.
        clock: monotonic seconds (a test's clock).
        cpu: CPU-seconds the process has spent (a test's clock).
    """

    def __init__(
        self,
        config: ClientBudgetConfig,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.cpu = cpu
        self._buckets: dict[str, _Bucket] = {}
        self._inflight: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._total = 0
        self._cpu_at = cpu()
        self._latest: tuple[str, float] = ("", -math.inf)
        self._other: tuple[str, float] = ("", -math.inf)

    def _bucket(self, client: str, now: float) -> _Bucket:
        config = self.config
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_CLIENTS:
                self._drop_full(now)
            bucket = self._buckets[client] = _Bucket(config.burst_s, now)
        else:
            refill = (now - bucket.at) * config.busy_per_s
            bucket.level = min(config.burst_s, bucket.level + refill)
            bucket.at = now
        return bucket

    def _drop_full(self, now: float) -> None:
        full_after = self.config.burst_s * 2 / self.config.busy_per_s
        idle = [c for c, b in self._buckets.items() if now - b.at > full_after]
        for client in idle:
            if client not in self._held:
                del self._buckets[client]
        if len(self._buckets) >= MAX_CLIENTS:  # all recent: forget the oldest half
            oldest = sorted(self._buckets.items(), key=lambda cb: cb[1].at)
            for client, _ in oldest[: len(oldest) // 2]:
                if client not in self._held:
                    del self._buckets[client]

    def _seen(self, client: str, now: float) -> float:
        """Record ``client`` as seen now; when another client was seen last."""
        latest, other = self._latest, self._other
        if latest[0] == client:
            self._latest = (client, now)
            return other[1]
        self._other, self._latest = latest, (client, now)
        return latest[1]

    def _share_out(self, now: float) -> None:
        """Charge the CPU time spent since the last event to the requests in flight."""
        cpu = self.cpu()
        spent, self._cpu_at = cpu - self._cpu_at, cpu
        if self._total <= 0 or spent <= 0:
            return
        floor = -self.config.burst_s
        for client, n in self._inflight.items():
            bucket = self._bucket(client, now)
            bucket.level = max(floor, bucket.level - spent * n / self._total)

    def admit(self, client: str) -> Refusal | None:
        """None to serve a request of ``client`` (it is held until `done`); else why it
        is refused."""
        now = self.clock()
        others_seen = self._seen(client, now)
        self._share_out(now)
        bucket = self._bucket(client, now)
        held = self._held.get(client, 0)
        if now - others_seen <= self.config.contended_s:
            if held >= self.config.max_inflight:
                return Refusal("held", 0.0)
            if bucket.level <= 0:
                return Refusal("budget", -bucket.level / self.config.busy_per_s)
        self._held[client] = held + 1
        return None

    def enter(self, client: str) -> Refusal | None:
        """`admit`, then `started` when admitted (the CPU clock is read once)."""
        refusal = self.admit(client)
        if refusal is None:
            self._start(client)
        return refusal

    def leave(self, client: str) -> None:
        """`ended`, then `done`: a request `enter` let through has been answered."""
        self.ended(client)
        self.done(client)

    def done(self, client: str) -> None:
        """A request `admit` let through has been answered."""
        left = self._held[client] - 1
        if left:
            self._held[client] = left
        else:
            del self._held[client]

    def started(self, client: str) -> None:
        """A request of ``client`` is in flight (admitted, or back from a wait)."""
        self._share_out(self.clock())
        self._start(client)

    def _start(self, client: str) -> None:
        self._inflight[client] = self._inflight.get(client, 0) + 1
        self._total += 1

    def ended(self, client: str) -> None:
        """A request of ``client`` is no longer in flight (done, or waiting); it counts
        as the client being seen."""
        now = self.clock()
        self._seen(client, now)
        self._share_out(now)
        left = self._inflight[client] - 1
        if left:
            self._inflight[client] = left
        else:
            del self._inflight[client]
        self._total -= 1

    def level(self, client: str) -> float:
        """The credit of ``client`` now, in CPU-seconds."""
        now = self.clock()
        self._share_out(now)
        return self._bucket(client, now).level


@dataclass(slots=True, frozen=True)
class _InFlight:
    """The request being served: its client and their budgets."""

    budgets: ClientBudgets
    client: str


_current: ContextVar[_InFlight | None] = ContextVar("simstream_client", default=None)


@asynccontextmanager
async def charge_waits() -> AsyncIterator[None]:
    """Take the current request out of flight while inside: it spends no CPU."""
    current = _current.get()
    if current is None:
        yield
        return
    current.budgets.ended(current.client)
    try:
        yield
    finally:
        current.budgets.started(current.client)


class ClientBudgetMiddleware:
    """Refuses a request of a client over its budget while others compete (module docstring).

    Args:
        app: the ASGI app.
        config: the budget (`ClientBudgetConfig`; ``busy_per_s`` 0: off).
        known_token: whether a bearer token is valid (an unknown one keys by address).
        retry_after_s: least ``Retry-After`` of a refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: ClientBudgetConfig,
        known_token: Callable[[str], bool],
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.config = config
        self.known_token = known_token
        self.retry_after_s = retry_after_s
        self.budgets = ClientBudgets(config)

    def client(self, scope: Scope) -> str:
        """The key of the client sending ``scope``'s request."""
        auth = header(scope, "authorization")
        if auth is not None:
            kind, _, token = auth.partition(" ")
            if kind.lower() == "bearer" and token and self.known_token(token):
                return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        host = (scope.get("client") or ("-",))[0]
        return f"address:{host}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.config.enabled
            or scope["type"] != "http"
            or route_class(scope.get("method", ""), scope["path"]) is None
        ):
            await self.app(scope, receive, send)
            return
        client = self.client(scope)
        budgets = self.budgets
        refusal = budgets.enter(client)
        if refusal is not None:
            await self._refuse(scope, receive, send, refusal)
            return
        reset = _current.set(_InFlight(budgets, client))
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(reset)
            budgets.leave(client)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
        API_REJECTED.labels("client_budget").inc()
        config = self.config
        await asyncio.sleep(config.tarpit_s)
        retry = max(self.retry_after_s, math.ceil(refusal.retry_s - config.tarpit_s))
        if refusal.reason == "held":
            detail = (
                f"Too many requests in flight from this client while others wait. Expected "
                f"at most {config.max_inflight} (SIMSTREAM_API_CLIENT_MAX_INFLIGHT). "
                f"Received: one more; retry after {retry} s"
            )
        else:
            detail = (
                f"Too much of the node's CPU time for this client while others wait. "
                f"Expected at most {config.busy_per_s:g} CPU-seconds a second, in bursts of "
                f"{config.burst_s:g} (SIMSTREAM_API_CLIENT_BUSY_PER_S, "
                f"SIMSTREAM_API_CLIENT_BURST_S). Received: more; retry after {retry} s"
            )
        await reply(scope, receive, send, 429, detail, {"Retry-After": str(retry)})
