"""Waits never starve the API: tokens past the end are refused, waiting holds no thread,
the probes answer on the event loop, and nothing waits for the node lock."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from producers.config import ProducerConfig
from producers.producer import ItemProducer
from simstream.kafka import end_offsets
from simstream.stack.process import free_port
from simstream.wire import ItemEvent
from tests.waiting import wait_for
from tests.workers.api.conftest import EMBEDDING_DIM, Served
from workers.api import create_app
from workers.api.server import ThreadedServer

pytestmark = pytest.mark.services

WAITERS = 48
FAR_FUTURE = 8
REFRESH_S = 1.0
BURST = 48


def _end_of(served: Served, partition: int) -> int:
    settings = served.settings
    probe = Consumer(settings.kafka_config(**{"group.id": "test-ends"}))
    try:
        return end_offsets(probe, settings.topic_items, [partition])[partition]
    finally:
        probe.close()


def _pending_token(client: TestClient | httpx.Client) -> str:
    """A real write token that stays invisible (nothing embeds it in these tests)."""
    response = client.delete("/v1/items/never-written-id")
    assert response.status_code == 202, response.text
    token: str = response.json()["token"]
    return token


def test_a_write_token_past_the_partitions_end_is_a_400_naming_the_end_offset(
    client: TestClient, served: Served
) -> None:
    end = _end_of(served, 0)
    token = f"{served.settings.topic_items}.p0.o9999999999"

    started = time.monotonic()
    response = client.post("/v1/lookup", json={"id": "digit-0001", "after": token})
    elapsed = time.monotonic() - started

    assert response.status_code == 400, response.text
    assert response.json()["detail"] == (
        f"Invalid value for `after`. Expected an offset below {end}, the end offset of "
        f"{served.settings.topic_items} partition 0. Received: offset 9999999999 "
        "(no event was written there)"
    )
    assert elapsed < served.settings.api_write_wait_s


@pytest.fixture
def server(served: Served) -> Iterator[str]:
    """The API over the shared node on a real uvicorn, with long waits and room for them."""
    settings = served.settings.model_copy(
        update={
            "api_write_wait_s": 4.0,
            "api_max_concurrent_lookups": WAITERS + FAR_FUTURE,
            "api_end_offsets_refresh_s": REFRESH_S,
        }
    )
    port = free_port()
    with ThreadedServer(create_app(settings, served.node), "127.0.0.1", port) as threaded:
        yield threaded.url


def _inflight_lookups() -> float:
    value = REGISTRY.get_sample_value("simstream_api_inflight_requests", {"route_class": "lookups"})
    return value or 0.0


def _waiting() -> float:
    return REGISTRY.get_sample_value("simstream_api_waiting_requests") or 0.0


def test_the_probes_answer_fast_while_dozens_of_lookups_wait_for_writes(
    server: str, served: Served
) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        token = _pending_token(http)
    topic = served.settings.topic_items
    far = f"{topic}.p0.o9999999999"

    def lookup(after: str) -> int:
        with httpx.Client(base_url=server, timeout=30) as http:
            return http.post("/v1/lookup", json={"id": "digit-0001", "after": after}).status_code

    probe_seconds: list[float] = []
    most_waiting = 0.0
    with ThreadPoolExecutor(WAITERS + FAR_FUTURE) as pool:
        waiting = [pool.submit(lookup, token) for _ in range(WAITERS)]
        refused = [pool.submit(lookup, far) for _ in range(FAR_FUTURE)]
        with httpx.Client(base_url=server, timeout=30) as http:
            while not all(f.done() for f in waiting):
                for path in ("/healthz", "/readyz"):
                    started = time.monotonic()
                    status = http.get(path).status_code
                    probe_seconds.append(time.monotonic() - started)
                    assert status == 200, path
                most_waiting = max(most_waiting, _waiting())

    assert max(probe_seconds) < 1.0, sorted(probe_seconds)[-5:]
    assert most_waiting >= WAITERS * 3 // 4  # the probes ran while the waits were in flight
    assert [f.result() for f in waiting] == [503] * WAITERS
    assert [f.result() for f in refused] == [400] * FAR_FUTURE


def _refreshes() -> float:
    return REGISTRY.get_sample_value("simstream_api_end_offset_refreshes_total") or 0.0


def _released_together(server: str, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """Send each request from its own thread and client, all released at once."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, dict]) -> httpx.Response:
        with httpx.Client(base_url=server, timeout=30) as http:
            http.get("/healthz")  # connected before the release
            barrier.wait()
            return http.post(request[0], json=request[1])

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_a_burst_of_far_future_tokens_costs_at_most_two_broker_reads_of_the_end_offsets(
    server: str, served: Served
) -> None:
    far = {"id": "digit-0001", "after": f"{served.settings.topic_items}.p0.o9999999999"}
    before = _refreshes()

    responses = _released_together(server, [("/v1/lookup", far)] * BURST)

    assert [r.status_code for r in responses] == [400] * BURST
    # one read for the first request; every later one waits for the next, spaced read
    assert _refreshes() - before <= 2
    assert max(r.elapsed.total_seconds() for r in responses) < 3 * REFRESH_S


def test_a_token_written_by_another_producer_after_the_last_read_is_waited_for_not_refused(
    server: str, served: Served
) -> None:
    far = {"id": "digit-0001", "after": f"{served.settings.topic_items}.p0.o9999999999"}
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.post("/v1/lookup", json=far).status_code == 400  # the end is read
        with ItemProducer(ProducerConfig.from_settings(served.settings)) as producer:
            token = producer.publish_sync(ItemEvent.delete("elsewhere-written-id"))
        response = http.post("/v1/lookup", json={"id": "digit-0001", "after": token.encode()})

    assert response.status_code == 503, response.text  # waited for (nothing embeds it)
    assert "has not applied write" in response.json()["detail"]


def test_probes_and_token_refusals_answer_while_every_handler_thread_is_blocked_in_a_search(
    server: str, served: Served
) -> None:
    locks = [graph.lock for graph in served.node.current().index.graphs]
    vector = [1.0] + [0.0] * (EMBEDDING_DIM - 1)
    query = {"vector": vector, "k": 1, "fresh": True}
    far = {"id": "digit-0001", "after": f"{served.settings.topic_items}.p0.o9999999999"}
    probe_seconds: list[float] = []
    with ThreadPoolExecutor(WAITERS) as pool:
        for lock in locks:  # fault: every graph write-locked, so every search blocks
            lock.acquire_write()
        try:
            blocked = [pool.submit(_lookup, server, query) for _ in range(WAITERS)]
            wait_for(lambda: _inflight_lookups() >= WAITERS, 30, message="lookups in flight")
            with httpx.Client(base_url=server, timeout=30) as http:
                for _ in range(20):
                    for path in ("/healthz", "/readyz"):
                        began = time.monotonic()
                        status = http.get(path).status_code
                        probe_seconds.append(time.monotonic() - began)
                        assert status == 200, path
                # answered on the event loop: neither auth nor the token check takes a thread
                refused = http.post("/v1/lookup", json=far, timeout=3 * REFRESH_S)
            assert not any(f.done() for f in blocked)  # the handlers were still blocked
        finally:
            for lock in locks:
                lock.release_write()
        answered = [f.result(timeout=30) for f in blocked]

    assert max(probe_seconds) < 0.5, sorted(probe_seconds)[-5:]
    assert refused.status_code == 400, refused.text
    assert answered == [200] * WAITERS


def _lookup(server: str, query: dict) -> int:
    with httpx.Client(base_url=server, timeout=30) as http:
        return http.post("/v1/lookup", json=query).status_code


def test_stats_and_lookups_by_image_answer_while_the_node_lock_is_held(
    client: TestClient, served: Served
) -> None:
    held, release = threading.Event(), threading.Event()

    def restoring() -> None:  # fault: the node lock held as by a snapshot restore
        with served.node._lock:
            held.set()
            release.wait(30)

    image = base64.b64encode(served.digits.pngs[3]).decode()
    holder = threading.Thread(target=restoring)
    holder.start()
    pool = ThreadPoolExecutor(2)
    try:
        assert held.wait(10)
        stats = pool.submit(client.get, "/v1/stats")
        lookup = pool.submit(client.post, "/v1/lookup", json={"image": image, "k": 1})
        stats_status = stats.result(timeout=5).status_code
        lookup_response = lookup.result(timeout=5)
    finally:
        release.set()
        holder.join()
        pool.shutdown()

    assert stats_status == 200
    assert lookup_response.status_code == 200, lookup_response.text
    assert lookup_response.json()["neighbors"][0]["id"] == served.digits.ids[3]


def test_lookups_waiting_for_writes_leave_the_lookup_class_to_plain_lookups(
    served: Served,
) -> None:
    """Two lookups may be in flight, six may wait for writes: six waiting lookups leave
    room for plain ones, and a seventh waiter is refused with a 429."""
    settings = served.settings.model_copy(
        update={"api_write_wait_s": 4.0, "api_max_concurrent_lookups": 2, "api_max_waiting": 6}
    )
    port = free_port()
    with (
        ThreadedServer(create_app(settings, served.node), "127.0.0.1", port) as threaded,
        httpx.Client(base_url=threaded.url, timeout=30) as http,
        ThreadPoolExecutor(6) as pool,
    ):
        token = _pending_token(http)
        before = _waiting()

        def lookup() -> int:
            with httpx.Client(base_url=threaded.url, timeout=30) as own:
                return own.post("/v1/lookup", json={"id": "digit-0001", "after": token}).status_code

        waiters = []
        for n in range(1, 7):
            waiters.append(pool.submit(lookup))

            def joined(n: int = n) -> bool:
                return _waiting() - before >= n

            wait_for(joined, 10, 0.01, f"{n} waiting")
        plain = [http.post("/v1/lookup", json={"id": "digit-0001"}) for _ in range(3)]
        refused = http.post("/v1/lookup", json={"id": "digit-0001", "after": token})
        assert _waiting() - before == 6  # the plain lookups ran while all six waited
        statuses = [f.result() for f in waiters]
    assert [r.status_code for r in plain] == [200] * 3, plain[0].text
    assert refused.status_code == 429, refused.text
    assert "SIMSTREAM_API_MAX_WAITING" in refused.json()["detail"]
    assert statuses == [503] * 6
