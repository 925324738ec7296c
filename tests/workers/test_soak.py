"""The ingest soak: items, updates, deletes and poison events while every process is SIGKILLed.

The embed worker (``simstream worker``), the dispatcher (``simstream dispatcher``)
and the index node with its API (``simstream serve``) run as child processes.
Events are published in chunks, each just before a kill: the test waits until
the embeddings log shows a range started and not finished, kills one process,
checks that the kill interrupted that range (as the crash tests in
``ingest/test_faults.py`` do), restarts it and measures the time until the
pipeline recovers. Once at least `KILLS_EACH` kills of each process interrupted
a range, the rest is published and the final state is read **through the API
only**: every live id once with its newest payload, deleted ids absent, every
poison event in ``GET /v1/admin/dead-letters`` exactly once with its reason (and
counted once by ``/count``), and no partition wedged.

``SIMSTREAM_SOAK_ITEMS`` sets the number of items and ``SIMSTREAM_SOAK_KILLS``
the mid-range kills of each process (3 by default); with ``SIMSTREAM_SOAK_OUT``
the figures are written there as JSON.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from confluent_kafka import Producer

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from simstream.wire import ArrayPayload, ItemEvent, Reason, VectorPayload
from simstream.wire.envelope import EVENT_MAGIC, pack
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.faults import (
    CommittedOffsets,
    EmbeddingsLog,
    simstream_argv,
    with_fast_recovery,
)
from tests.workers.pipeline import Expected, items_end, publish
from workers.ingest.dispatcher import dispatch_group

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.services]

ITEMS = int(os.environ.get("SIMSTREAM_SOAK_ITEMS", "1000"))
#: Kills of each process that must have interrupted a range in flight.
KILLS_EACH = int(os.environ.get("SIMSTREAM_SOAK_KILLS", "3"))
#: Poison events per item published.
POISON_SHARE = 0.02
CHUNKS = 3 * KILLS_EACH + 1
#: Fewest events published before a kill: ranges of several slowed batches in flight.
MIN_CHUNK = 600
ADMIN = "soak-admin-token"
InFlight = dict[int, list[int]]


def _poison(kind: int, n: int) -> tuple[bytes | None, bytes, Reason]:
    """The key, value and expected reason of poison event ``n`` of one of seven kinds."""
    key = f"poison-{n}"
    header: dict[str, Any] = {"id": key, "op": "upsert", "ts": 1, "kind": "vector"}
    body = np.ones(16, np.float32).tobytes()
    if kind == 0:
        return key.encode(), b"\x00\x01 undecodable bytes", Reason.BAD_MAGIC
    if kind == 1:
        return key.encode(), EVENT_MAGIC + b"\x00", Reason.TRUNCATED
    if kind == 2:
        oversize = VectorPayload.from_values(np.ones(4096, np.float32))
        return key.encode(), ItemEvent.upsert(key, oversize).encode(), Reason.PAYLOAD_TOO_LARGE
    if kind == 3:
        return key.encode(), pack(EVENT_MAGIC, {**header, "meta": [1]}, body), Reason.BAD_METADATA
    if kind == 4:
        header.pop("id")
        return None, pack(EVENT_MAGIC, header, body), Reason.BAD_ID
    if kind == 5:
        return key.encode(), pack(EVENT_MAGIC, {**header, "op": "merge"}, body), Reason.UNKNOWN_OP
    raise ValueError(f"Expected a poison kind 0..5. Received: {kind}")


#: Poison kinds: six that no decoder accepts, and an update to float64 1e300 (kind 6).
POISON_KINDS = 7


@dataclass
class Workload:
    """The events of the soak in chunks, and what the index and the DLQ must end with."""

    settings: Settings
    rng: random.Random
    expected: Expected = field(default_factory=Expected)
    #: (partition, offset) of every poison event → its reason.
    poison: dict[tuple[int, int], str] = field(default_factory=dict)
    chunks: list[list[tuple[str, Any]]] = field(default_factory=list)
    events: int = 0

    def __post_init__(self) -> None:
        updates, deletes = ITEMS // 5, ITEMS // 10
        ops: list[tuple[str, Any]] = [("upsert", (f"item-{i}", 0)) for i in range(ITEMS)]
        ops += [("upsert", (f"item-{i}", 1)) for i in range(updates)]
        ops += [("delete", f"item-{i}") for i in range(updates, updates + deletes)]
        # Non-finite updates hit items that nothing updates or deletes afterwards.
        spare = list(range(updates + deletes, ITEMS))
        for n in range(int(ITEMS * POISON_SHARE)):
            at = self.rng.randrange(ITEMS, len(ops) + 1)  # after every first upsert
            target = f"item-{spare[n % len(spare)]}"
            ops.insert(at, ("poison", n) if n % POISON_KINDS else ("huge", target))
        size = max(-(-len(ops) // CHUNKS), MIN_CHUNK)
        self.chunks = [ops[i : i + size] for i in range(0, len(ops), size)]

    def publish_next(self) -> None:
        """Publish the next chunk; once none is left, updates of random live items."""
        if self.chunks:
            ops = self.chunks.pop(0)
        else:
            ids = self.rng.sample(
                sorted(self.expected.live), min(MIN_CHUNK, len(self.expected.live))
            )
            ops = [("upsert", (i, self.expected.live[i] + 1)) for i in ids]
        upserts = [arg for kind, arg in ops if kind == "upsert"]
        deletes = [arg for kind, arg in ops if kind == "delete"]
        # Per id, the order holds: an id's upserts keep theirs, its delete follows them.
        publish(self.settings, self.expected, upserts=upserts, deletes=deletes)
        # The contract's partitioner (murmur2, as ItemProducer): an item's events share a partition.
        raw = Producer(self.settings.kafka_config(partitioner="murmur2_random"))
        for kind, arg in ops:
            if kind in ("poison", "huge"):
                self._produce_poison(raw, kind, arg)
        assert raw.flush(30) == 0
        self.events += len(ops)

    def _produce_poison(self, raw: Producer, kind: str, arg: Any) -> None:
        if kind == "huge":  # float64 1e300 decodes, and is inf as the model's float32
            huge = ArrayPayload.from_array(np.full(16, 1e300, dtype=np.float64))
            key, value, reason = arg.encode(), ItemEvent.upsert(arg, huge).encode(), None
            self.expected.delete(arg)
        else:
            key, value, reason = _poison(arg % POISON_KINDS - 1, arg)
        why = str(reason or Reason.NON_FINITE_INPUT)

        def delivered(error: Any, message: Any) -> None:
            assert error is None, error
            self.poison[(message.partition(), message.offset())] = why

        raw.produce(self.settings.topic_items, key=key, value=value, on_delivery=delivered)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """One killed and restarted process: how it is judged mid-range, and its figures."""

    child: Child
    #: Polled until it returns the ranges in flight worth a kill (None: not yet).
    mid_range: Callable[[], InFlight | None]
    #: Called after the kill: the ranges in flight the kill interrupted (empty: none).
    interrupted: Callable[[InFlight], InFlight]
    #: Called after the kill: a check of its recovery (the next range done, the API up).
    recovery: Callable[[], Callable[[], bool]]
    kills: int = 0
    interrupting: int = 0
    recover_s: list[float] = field(default_factory=list)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Quick recovery, slowed batches, a small payload limit, an admin token, a free port."""
    return with_fast_recovery(
        settings,
        fault_embed_batch_delay_s=0.2,
        snapshot_every_s=2.0,
        max_payload_bytes=4096,
        api_port=_free_port(),
        api_admin_tokens=ADMIN,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[httpx.Client]:
    url = f"http://127.0.0.1:{settings.api_port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        yield client


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _tail(child: Child, lines: int = 60) -> str:
    return "\n".join(child.output().splitlines()[-lines:])


def _alive_and(child: Child, condition: Callable[[], bool]) -> Callable[[], bool]:
    """``condition``, failing at once (with the child's last lines) if the child exited."""

    def check() -> bool:
        if child.exited():
            raise AssertionError(f"{child.argv[3:]} exited while recovering:\n{_tail(child)}")
        return condition()

    return check


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


@pytest.mark.timeout(1800 + ITEMS // 10)  # 20,000 items: 3,800 s
def test_a_soak_with_poison_events_and_killed_processes_ends_with_exactly_the_expected_index(
    settings: Settings, encoder_version: str, api: httpx.Client, tmp_path: Path
) -> None:
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    seed = int(time.time())
    rng = random.Random(seed)
    work = Workload(settings, rng)
    embeddings = EmbeddingsLog(settings, encoder_version)
    committed = CommittedOffsets(settings, dispatch_group(settings.topic_items, encoder_version))
    env = settings.to_env(metrics_port=0)

    def child(name: str, *args: str) -> Child:
        return Child(simstream_argv(*args), env, tmp_path / f"{name}.log")

    def in_flight() -> InFlight | None:
        return embeddings.poll().in_flight() or None

    def still_open(seen: InFlight) -> InFlight:
        embeddings.poll()
        return {p: o for p, o in seen.items() if not embeddings.covered(p, o[0])}

    def worker_cut(seen: InFlight) -> InFlight:
        time.sleep(0.5)  # what the dead worker had sent arrives
        return still_open(seen)

    def uncommitted(seen: InFlight | None) -> InFlight | None:
        done = committed.read()
        return {p: o for p, o in (seen or {}).items() if o[0] >= done[p]} or None

    def next_range() -> Callable[[], bool]:
        before = embeddings.poll().completed()
        return lambda: embeddings.poll().completed() > before

    def next_commit() -> Callable[[], bool]:
        before = committed.read()
        return lambda: committed.read() != before

    processes = {
        "worker": Process(
            child("worker", "worker", "--queues", "embed"), in_flight, worker_cut, next_range
        ),
        "dispatcher": Process(
            child("dispatcher", "dispatcher", "--model-version", encoder_version),
            lambda: uncommitted(in_flight()),
            lambda seen: uncommitted(still_open(seen)) or {},
            next_commit,
        ),
        "node": Process(
            child("node", "serve"), in_flight, still_open, lambda: lambda: _answers(api)
        ),
    }
    for process in processes.values():
        process.child.start()
    started = time.monotonic()
    try:
        wait_for(lambda: _answers(api), timeout_s=120, interval_s=0.2, message="the API")
        order = [name for name in processes for _ in range(KILLS_EACH)]
        rng.shuffle(order)
        for _ in range(6 * len(order)):
            if not order:
                break
            name = order[0]
            process = processes[name]
            work.publish_next()
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment, then the next range in flight
            try:
                seen = wait_for(process.mid_range, timeout_s=20, interval_s=0.01, message="work")
            except TimeoutError:
                continue
            assert seen is not None
            process.child.kill()
            killed = time.monotonic()
            process.kills += 1
            cut = process.interrupted(seen)
            recovered = process.recovery()
            process.child.start()
            wait_for(
                _alive_and(process.child, recovered),
                timeout_s=180,
                interval_s=0.05,
                message=f"{name} recovered",
            )
            process.recover_s.append(time.monotonic() - killed)
            if cut:
                process.interrupting += 1
                order.pop(0)
        assert not order, f"kills that never interrupted a range: {order}"
        while work.chunks:
            work.publish_next()

        def settled() -> bool:
            # Read afresh each time: the in-memory broker can answer a short end once
            # (the node logs it as node.log_end_stale), and a stale snapshot of it here
            # would never equal the committed offsets.
            ends = items_end(settings)
            if committed.read() != ends or not embeddings.poll().accounts_for(ends):
                return False
            stats = api.get("/v1/stats").json()
            return stats["lag_records"] == 0 and stats["source_lag_events"] == 0

        wait_for(settled, timeout_s=600, interval_s=0.5, message="every partition committed")
        figures = _check_through_the_api(api, work)
    except BaseException:
        # The children's logs are in the test's tmp dir; their ends go with the failure.
        for name, process in processes.items():
            print(f"--- {name} ({process.child.log}), last lines ---\n{_tail(process.child)}")
        raise
    finally:
        for process in processes.values():
            process.child.stop()
        embeddings.close()
        committed.close()
    figures |= {
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "items": ITEMS,
        "events": work.events,
        "kills": {n: p.kills for n, p in processes.items()},
        "kills_mid_range": {n: p.interrupting for n, p in processes.items()},
        "recover_s": {
            n: {"p50": _percentile(p.recover_s, 50), "p99": _percentile(p.recover_s, 99)}
            for n, p in processes.items()
        },
    }
    if out := os.environ.get("SIMSTREAM_SOAK_OUT"):
        Path(out).write_text(json.dumps(figures, indent=2) + "\n")
    assert (figures["lost"], figures["duplicated"], figures["stale"]) == (0, 0, 0), figures
    assert figures["resurrected"] == 0, figures


def _check_through_the_api(api: httpx.Client, work: Workload) -> dict[str, Any]:
    """Compare what the API serves and lists with what was published; return the figures."""
    expected = work.expected
    lost = stale = 0
    for item_id, rev in expected.live.items():
        response = api.get(f"/v1/items/{item_id}")
        if response.status_code == 404:
            lost += 1
        elif response.json()["metadata"].get("rev") != rev:
            stale += 1
    resurrected = [i for i in expected.deleted if api.get(f"/v1/items/{i}").status_code != 404]
    items = api.get("/v1/stats").json()["items"]
    letters: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/admin/dead-letters", params=params).json()
        letters += page["dead_letters"]
        if (cursor := page["next_cursor"]) is None:
            break
    listed: dict[tuple[int, int], list[str]] = {}
    for letter in letters:
        listed.setdefault((letter["partition"], letter["offset"]), []).append(letter["reason"])
    counted = api.get("/v1/admin/dead-letters/count").json()
    # Every poison event in the DLQ exactly once, with its reason, however often its
    # range was embedded again after a kill (the topic itself may hold repeats).
    assert {at: reasons for at, reasons in listed.items()} == {
        at: [reason] for at, reason in work.poison.items()
    }
    assert counted["dead_letters"] == len(letters) == len(work.poison), counted
    return {
        "live": len(expected.live),
        "deleted": len(expected.deleted),
        "served_items": items,
        "lost": lost,
        "stale": stale,
        "duplicated": items - (len(expected.live) - lost),
        "resurrected": len(resurrected),
        "resurrected_ids": sorted(resurrected)[:20],
        "poison_events": len(work.poison),
        "dlq_listed": len(letters),
        "dlq_repeated": len(letters) - len(listed),
        "dlq_records": counted["records"],
    }
