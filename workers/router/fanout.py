"""`Fanout`: one request per partition set, to one replica, retried and hedged.

For each partition set the router orders the live replicas that are ready and
hold the answer's model version (round robin, replicas that failed recently
last), asks the first, and

- asks the next one too when the first has not answered within the hedge
  deadline (``SIMSTREAM_ROUTER_HEDGE_MS``): the first answer wins, the other
  request is cancelled;
- asks the next one when a replica fails (no connection, a timeout, a 5xx, a
  409 ``version_unavailable``, a 429);
- gives the set up when no replica is left: its partitions are *missing*,
  unless a replica answered that it has not applied the request's write token
  yet (503 ``not_ready``): then the set is *behind*, and the client gets that
  503 with its ``Retry-After`` (the write exists; it is not searchable yet).

A replica's 4xx other than 409 and 429 is the request's own fault (every
replica would answer the same) and goes back to the client as it came.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from simstream.errors import ReplicaBehindError, ReplicaError, RequestError
from simstream.log import get_logger
from workers import metrics
from workers.cluster.membership import ClusterView, NodeRecord
from workers.cluster.placement import partitions_of

Send = Callable[[NodeRecord], Awaitable[httpx.Response]]
"""Sends one request to a node."""

log = get_logger("router")

_RETRYABLE_4XX = (409, 429)
_SUSPECT_S = 5.0
"""How long a replica that failed is asked last."""


@dataclass(frozen=True, slots=True)
class SetAnswer:
    """The answer of one partition set.

    Attributes:
        partition_set: the set.
        node: the replica that answered, or None when none did.
        body: its JSON body, or None.
        behind: when none answered, a replica's refusal for not having applied the
            request's write token yet (None: every replica failed otherwise).
    """

    partition_set: int
    node: NodeRecord | None
    body: dict[str, Any] | None
    behind: ReplicaBehindError | None = None


def holds(record: NodeRecord, version: str) -> bool:
    """Whether a replica may answer for ``version``: ready, holding its generation, and
    that generation complete (serving, retained, or built and caught up)."""
    generation = record.generations.get(version)
    if not record.ready or generation is None:
        return False
    return generation.state != "building" or generation.caught_up


class Fanout:
    """Sends a body to one replica of each partition set, with retries and hedging.

    Args:
        client: the pooled HTTP client (the router's, closed by the router).
        hedge_s: seconds before a hedged request to another replica (0: off).
        partitions: the items topic's partitions (a replica must hold exactly its set's).
    """

    def __init__(self, client: httpx.AsyncClient, hedge_s: float, partitions: int) -> None:
        self.client = client
        self.hedge_s = hedge_s
        self.partitions = partitions
        self._turns: dict[int, itertools.count[int]] = {}
        self._suspect: dict[str, float] = {}

    def replicas(self, view: ClusterView, partition_set: int, version: str) -> list[NodeRecord]:
        """The replicas of a set that may answer for ``version``, in the order to ask them.

        A record whose partitions are not exactly its set's (a node configured with
        another ``SIMSTREAM_PARTITION_SETS``) is left out: its answers would overlap
        another set's or miss partitions.
        """
        own = partitions_of(partition_set, view.partition_sets, self.partitions)
        candidates = sorted(
            (
                r
                for r in view.sets.get(partition_set, [])
                if holds(r, version) and tuple(r.partitions) == own
            ),
            key=lambda r: r.id,
        )
        if not candidates:
            return []
        turn = next(self._turns.setdefault(partition_set, itertools.count())) % len(candidates)
        rotated = candidates[turn:] + candidates[:turn]
        now = time.monotonic()
        return sorted(rotated, key=lambda r: self._suspect.get(r.id, 0.0) > now)

    async def ask(
        self, replicas: Sequence[NodeRecord], send: Send, partition_set: int = -1
    ) -> SetAnswer:
        """Ask ``replicas`` in order until one answers usefully; hedge after ``hedge_s``.

        Raises:
            RequestError: a replica refused the request itself (a 4xx but 409/429).
        """
        waiting = list(replicas)
        running: dict[asyncio.Task[dict[str, Any]], NodeRecord] = {}
        behind: ReplicaBehindError | None = None

        def launch() -> None:
            node = waiting.pop(0)
            running[asyncio.ensure_future(self._answer(node, send))] = node

        if waiting:
            launch()
        try:
            while running:
                deadline = self.hedge_s if waiting and self.hedge_s > 0 else None
                done, _ = await asyncio.wait(
                    running, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    metrics.ROUTER_HEDGES.inc()
                    launch()
                    continue
                for task in done:
                    node = running.pop(task)
                    try:
                        return SetAnswer(partition_set, node, task.result())
                    except ReplicaBehindError as e:  # healthy, only not caught up yet
                        behind = e
                        log.info("router.replica_behind", node=node.id, error=str(e))
                    except ReplicaError as e:
                        self._suspect[node.id] = time.monotonic() + _SUSPECT_S
                        metrics.ROUTER_RETRIES.inc()
                        log.warning("router.replica_failed", node=node.id, error=str(e))
                if waiting and not running:
                    launch()
            return SetAnswer(partition_set, None, None, behind)
        finally:
            for task in running:
                task.cancel()

    def post(
        self,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> Send:
        """A `Send` that POSTs ``body`` as JSON to ``path`` of a node, waiting at most
        ``timeout_s`` for the answer (None: the client's own timeout)."""
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s)

        def send(node: NodeRecord) -> Awaitable[httpx.Response]:
            return self.client.post(
                node.url + path, json=body, headers=dict(headers), timeout=timeout
            )

        return send

    def get(self, path: str, params: Mapping[str, str], headers: Mapping[str, str]) -> Send:
        """A `Send` that GETs ``path`` of a node."""

        def send(node: NodeRecord) -> Awaitable[httpx.Response]:
            return self.client.get(node.url + path, params=dict(params), headers=dict(headers))

        return send

    @staticmethod
    async def _answer(node: NodeRecord, send: Send) -> dict[str, Any]:
        try:
            response = await send(node)
        except httpx.HTTPError as e:
            raise ReplicaError(f"{type(e).__name__}: {e}") from None
        return answer_of(response)


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON of a node's 200 answer.

    Raises:
        RequestError: a 4xx (but 409/429) passed on as it came.
        ReplicaBehindError: a 503 ``not_ready``: the write token is not applied yet.
        ReplicaError: any other failure (the next replica is asked).
    """
    status = response.status_code
    if status == 200:
        body: dict[str, Any] = response.json()
        return body
    detail, code = _error(response)
    if status == 503 and code == "not_ready":
        retry_after = response.headers.get("Retry-After", "1")
        raise ReplicaBehindError(
            detail, float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 1.0
        )
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        raise RequestError(detail, status, code)
    raise ReplicaError(f"HTTP {status}: {response.text[:200]}")


def _error(response: httpx.Response) -> tuple[str, str | None]:
    """The ``detail`` and ``code`` of an error body (its text and None when it has none)."""
    try:
        error = response.json()
        code = error.get("code")
        return str(error["detail"]), code if isinstance(code, str) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text, None
