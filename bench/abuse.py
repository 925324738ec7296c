"""The abuse benchmark (``simstream bench abuse``): serving while a hostile client attacks.

Protocol, one run on one machine, everything on 127.0.0.1:

1. An index node holding ``items`` random unit vectors (`bench.api.served_node`),
   registered under a small image model (28×28 grey) so that image queries meet
   the real decoder; lookups by vector never call the encoder. Items carry label
   ``n % 10`` and metadata ``{"one": label == "1"}``. The app (with the Redis result
   cache) is served by uvicorn on a free port in this process.
   Auth is on: the normal client and the attacker each hold a read token, two
   clients as in production (where the node refuses to serve without tokens), so
   the per-client budgets (`workers.api.client_budget`) tell them apart.
2. Three client processes, apart from the server's and from each other, so
   that neither the server nor an observer competes for another's GIL: one sends
   **normal lookups** (a random vector, ``k`` = 10, uncached) at a steady
   ``rate`` from start to end, one polls ``/healthz`` every ``healthz_every_s``,
   and the attacker, after ``idle_s`` of normal load alone, runs the abuse
   phases one after another (its clients, one per attacking thread, are made
   and connected before the idle period; each phase's threads are released
   together):

   - ``unmatched_filter``: 256-query batches filtered on ``{"nope": 1}``, a value
     no item holds;
   - ``disjoint_filter``: 256-query batches filtered on label ``"1"`` and
     ``one: false``, two large posting lists that never meet (their empty
     intersection answers without a graph search);
   - ``far_future_after``: 64 concurrent lookups with a write token far past the
     end of ``items``;
   - ``bomb_batch`` and ``bomb_single``: one batch of 200 decompression-bomb PNGs
     (1-bit, 8000×8000 pixels, a few kB each), then the same 200 one lookup each;
   - ``random_ef``: 50 uncached lookups with ``ef`` drawn from 1 to its maximum.

   The sequence runs at least ``rounds`` times, and again until the abuse has
   lasted as long as the idle period, so that both p99s come from about as many
   normal lookups (a p99 of fewer than a hundred samples is their maximum; the
   faster the node refuses abuse, the shorter a fixed count of rounds lasts).

3. Meanwhile this process samples its own RSS. Reported: normal p99 idle and
   under abuse (successful lookups, client wall time) and their ratio, the worst
   ``/healthz`` time (from the idle period on, and under abuse; the set-up, while
   the client processes start and connect, apart), RSS growth (peak during abuse
   minus the idle level), and status counts per phase and in total. Every
   request has a client timeout, and every phase a fixed count of requests, so
   a run is bounded.
"""

from __future__ import annotations

import base64
import io
import json
import multiprocessing
import os
import random
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.api import K, served_node
from bench.common import cpu_count, percentiles_ms, unit_rows, write_json
from simstream.log import get_logger

log = get_logger("bench.abuse")

BATCH = 256
AFTER_CONCURRENCY = 64
BOMBS = 200
BOMB_SIDE = 8000
EF_REQUESTS = 50
TIMEOUT_S = 60.0
"""Client timeout of every request: a hung request shows as a timeout, never a hang."""

TARGETS = {"normal_p99_ratio": 3.0, "healthz_max_ms": 100.0, "rss_growth_mb": 200.0}


@dataclass(frozen=True)
class Plan:
    """What the client process sends (built here, pickled to it)."""

    base: str
    normal: list[bytes]
    rate: float
    idle_s: float
    healthz_every_s: float
    bomb_bytes: int
    phases: list[tuple[str, str, list[bytes], int]] = field(default_factory=list)
    """Per abuse phase: name, path, bodies (sent once each per round), client threads."""
    rounds: int = 1
    """Least times the sequence of phases runs; it runs again until it has lasted ``idle_s``."""
    tokens: tuple[str, str] = ("", "")
    """Bearer tokens of the normal client and of the attacker: two clients (read scope)."""


Observation = tuple[float, float, int]
"""(monotonic start, seconds, status) of one request; starts compare across processes."""


def observe_normal(plan: Plan, warmed: threading.Event, stop: threading.Event) -> list[Observation]:
    """Send normal lookups at ``plan.rate`` until ``stop`` (in a process of its own).

    Returns:
        (start, seconds, status) per normal lookup; monotonic start times are
        comparable across processes. ``warmed`` is set once the warm-up is done.
    """
    local = threading.local()

    def post(body: bytes) -> tuple[float, int, bytes]:
        if not hasattr(local, "client"):
            local.client = _client(plan.base, plan.tokens[0])
        return _post(local.client, "/v1/lookup", body)

    normal: list[Observation] = []

    def one(i: int) -> None:
        started = time.monotonic()
        seconds, status, _ = post(plan.normal[i % len(plan.normal)])
        normal.append((started, seconds, status))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, plan.normal[:40]))  # warm: every thread's client, first searches
        warmed.set()
        t0, i = time.monotonic(), 0
        while not stop.is_set():
            pool.submit(one, i)
            i += 1
            time.sleep(max(0.0, t0 + i / plan.rate - time.monotonic()))
    return normal


def observe_healthz(plan: Plan, stop: threading.Event) -> list[Observation]:
    """Poll ``/healthz`` every ``plan.healthz_every_s`` until ``stop`` (in a process of its own).

    Returns:
        (start, seconds, status) per probe.
    """
    probes: list[Observation] = []
    with httpx.Client(base_url=plan.base, timeout=TIMEOUT_S) as client:
        while not stop.is_set():
            started, began = time.monotonic(), time.perf_counter()
            status = client.get("/healthz").status_code
            probes.append((started, time.perf_counter() - began, status))
            time.sleep(plan.healthz_every_s)
    return probes


def attack(plan: Plan, warmed: threading.Event, stop: threading.Event) -> dict[str, Any]:
    """After ``plan.idle_s`` of normal load, run the abuse phases, then set ``stop``.

    Runs in a process of its own, so its threads never take the GIL from the
    observers. Its clients (one per attacking thread, each costing tens of ms of
    CPU to make) are made and connected before the idle period, so the abuse
    window holds requests only.

    Returns:
        ``phases``: per abuse phase its statuses, seconds, slowest request, count
        of exhaustive and non-exhaustive answers, neighbours returned, one
        refusal's detail and its ``windows`` (one per round); ``abuse_window``:
        start and end of the abuse phases; ``idle_start``: when every client was
        made and warm and the idle period began (monotonic seconds); ``rounds``:
        how many times the sequence ran.
    """
    progress = get_logger("bench.abuse.client")
    clients: list[httpx.Client] = []
    try:
        clients += [
            _client(plan.base, plan.tokens[1])
            for _ in range(max(threads for *_, threads in plan.phases))
        ]
        for client in clients:
            client.get("/healthz")  # connected: the phases reuse the connection
        warmed.wait(TIMEOUT_S)
        progress.info("bench.abuse_phase", phase="idle", seconds=plan.idle_s)
        idle_start = time.monotonic()
        time.sleep(plan.idle_s)
        abuse_start = time.monotonic()
        phases: dict[str, dict[str, Any]] = {}
        round_ = 0
        while round_ < plan.rounds or time.monotonic() - abuse_start < plan.idle_s:
            for name, path, bodies, threads in plan.phases:
                progress.info("bench.abuse_phase", phase=name, round=round_, requests=len(bodies))
                began = time.monotonic()
                result = _attack(clients[:threads], path, bodies)
                result["windows"] = [(began, time.monotonic())]
                phases[name] = _merged(phases[name], result) if name in phases else result
            round_ += 1
        abuse_end = time.monotonic()
    finally:
        stop.set()
        for client in clients:
            client.close()
    return {
        "phases": phases,
        "abuse_window": (abuse_start, abuse_end),
        "idle_start": idle_start,
        "rounds": round_,
    }


def _client(base: str, token: str) -> httpx.Client:
    """A keep-alive client sending ``token`` as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=base, timeout=TIMEOUT_S, headers=headers)


def _post(client: httpx.Client, path: str, body: bytes) -> tuple[float, int, bytes]:
    """Seconds, status (0 on a client timeout) and body of one JSON POST."""
    began = time.perf_counter()
    try:
        r = client.post(path, content=body, headers={"Content-Type": "application/json"})
        status, content = r.status_code, r.content
    except httpx.TimeoutException:
        status, content = 0, b""
    return time.perf_counter() - began, status, content


def _attack(clients: list[httpx.Client], path: str, bodies: list[bytes]) -> dict[str, Any]:
    """Send each body once from one thread per client, released together; tally the answers."""
    threads = len(clients)
    released: list[float] = []
    barrier = threading.Barrier(threads, action=lambda: released.append(time.perf_counter()))
    answers: list[tuple[float, int, bytes]] = []

    def worker(n: int) -> None:
        barrier.wait()
        for body in bodies[n::threads]:
            answers.append(_post(clients[n], path, body))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    statuses = Counter(str(status) for _, status, _ in answers)
    exhaustive: Counter[str] = Counter()
    neighbours = 0
    details: dict[int, str] = {}  # the first refusal's detail per status
    for _, status, content in answers:
        data = json.loads(content) if content else {}
        if status == 200:
            for result in data.get("results", [data]):
                exhaustive[str(result["exhaustive"]).lower()] += 1
                neighbours += len(result["neighbors"])
        elif status not in details:
            details[status] = str(data.get("detail", ""))[:500]
    # the phase's own refusal first; a 429 (the attacker's budget) only when nothing else
    refusals = sorted(details, key=lambda status: status == 429)
    detail = details[refusals[0]] if refusals else None
    return {
        "requests": len(answers),
        "status_counts": dict(statuses),
        "seconds": round(time.perf_counter() - released[0], 3),
        "max_ms": round(1000 * max(s for s, _, _ in answers), 1),
        "exhaustive": dict(exhaustive),
        "neighbours": neighbours,
        "detail": detail,
    }


def bomb_png() -> bytes:
    """A PNG of a few kB that decodes to ``BOMB_SIDE``² black pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def plan_for(
    base: str,
    topic: str,
    rng: np.random.Generator,
    dim: int,
    max_ef: int,
    rate: float,
    idle_s: float,
    filter_batches: int,
) -> Plan:
    """The requests of one run: normal lookups and every abuse phase's bodies."""

    def vectors(n: int) -> list[list[float]]:
        return [v.tolist() for v in unit_rows(rng.standard_normal((n, dim)).astype(np.float32))]

    def dumps(data: dict[str, Any]) -> bytes:
        return json.dumps(data).encode()

    def batch(flt: dict[str, Any]) -> bytes:
        queries = [{"vector": v} for v in vectors(BATCH)]
        return dumps({"queries": queries, "k": K, "filter": flt, "fresh": True})

    png = bomb_png()
    bomb = base64.b64encode(png).decode()
    draw = random.Random(int(rng.integers(2**31)))
    after = f"{topic}.p0.o9999999999"
    phases = [
        ("unmatched_filter", "/v1/lookup/batch",
         [batch({"metadata": {"nope": 1}}) for _ in range(filter_batches)], 2),
        ("disjoint_filter", "/v1/lookup/batch",
         [batch({"labels": ["1"], "metadata": {"one": False}}) for _ in range(filter_batches)], 2),
        ("far_future_after", "/v1/lookup",
         [dumps({"vector": v, "k": K, "after": after}) for v in vectors(AFTER_CONCURRENCY)],
         AFTER_CONCURRENCY),
        ("bomb_batch", "/v1/lookup/batch",
         [dumps({"queries": [{"image": bomb}] * BOMBS, "k": K})], 1),
        ("bomb_single", "/v1/lookup", [dumps({"image": bomb, "k": K})] * BOMBS, 8),
        ("random_ef", "/v1/lookup",
         [dumps({"vector": v, "k": K, "ef": draw.randint(1, max_ef), "fresh": True})
          for v in vectors(EF_REQUESTS)], 8),
    ]  # fmt: skip
    normal = [dumps({"vector": v, "k": K, "fresh": True}) for v in vectors(2000)]
    return Plan(base, normal, rate, idle_s, 0.05, len(png), phases)


class RssSampler:
    """Samples this process's resident set size (``/proc/self/status``) every ``every_s``."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), rss_mb()))
            self._stop.wait(self.every_s)

    def between(self, start: float, end: float) -> list[float]:
        """The samples (MB) taken from ``start`` to ``end`` (monotonic seconds)."""
        return [mb for t, mb in self.samples if start <= t <= end]


def rss_mb() -> float:
    """This process's resident set size in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("Expected a VmRSS line in /proc/self/status. Received: none")


def _merged(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two rounds of one phase as one: counts and times added, the slowest kept."""

    def added(x: dict[str, int], y: dict[str, int]) -> dict[str, int]:
        return dict(Counter(x) + Counter(y))

    return {
        "requests": a["requests"] + b["requests"],
        "status_counts": added(a["status_counts"], b["status_counts"]),
        "seconds": round(a["seconds"] + b["seconds"], 3),
        "max_ms": max(a["max_ms"], b["max_ms"]),
        "exhaustive": added(a["exhaustive"], b["exhaustive"]),
        "neighbours": a["neighbours"] + b["neighbours"],
        "detail": a["detail"] if a["detail"] is not None else b["detail"],
        "windows": a["windows"] + b["windows"],
    }


def run(
    out: Path | str,
    items: int = 100_000,
    dim: int = 64,
    rate: float = 20.0,
    idle_s: float = 30.0,
    filter_batches: int = 2,
    rounds: int = 5,
    seed: int = 0,
    index_limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Run the benchmark, write ``out`` (JSON) and return the figures (see the module docstring).

    Args:
        out: the JSON results file.
        items: vectors indexed.
        dim: embedding size.
        rate: normal lookups per second, idle and under abuse.
        idle_s: seconds of normal load alone before the abuse phases.
        filter_batches: 256-query batches of each filter phase.
        rounds: times the sequence of abuse phases runs.
        seed: random seed.
        index_limits: `IndexConfig` fields to override: a scaled-down run scales
            ``exact_filter_limit`` and ``filter_fetch_limit`` down with the items.
    """
    from model.inputs import InputSpec
    from workers.api.app import create_app
    from workers.api.server import ThreadedServer
    from workers.cache import CacheConfig, RedisResultCache

    rng = np.random.default_rng(seed)
    load_start = os.getloadavg()[0]
    with served_node(
        items,
        dim,
        rng,
        seed,
        "bench-abuse",
        InputSpec.image(28, 28, 1),
        metadata=lambda n: {"one": n % 10 == 1},
        index_limits=index_limits,
    ) as served:
        tokens = ("normal-" + secrets.token_hex(8), "attacker-" + secrets.token_hex(8))
        settings = served.settings.model_copy(update={"api_read_tokens": ",".join(tokens)})
        app = create_app(
            settings, served.node, cache=RedisResultCache(CacheConfig.from_settings(settings))
        )
        base = f"http://127.0.0.1:{settings.api_port}"
        max_ef = 4 * settings.api_max_k
        plan = plan_for(base, settings.topic_items, rng, dim, max_ef, rate, idle_s, filter_batches)
        plan = replace(plan, rounds=rounds, tokens=tokens)
        context = multiprocessing.get_context("spawn")
        with (
            ThreadedServer(app, "127.0.0.1", settings.api_port),
            context.Manager() as manager,
            ProcessPoolExecutor(3, mp_context=context) as clients,
            RssSampler() as rss,
        ):
            warmed, stop = manager.Event(), manager.Event()
            started = time.monotonic()
            normal = clients.submit(observe_normal, plan, warmed, stop)
            healthz = clients.submit(observe_healthz, plan, stop)
            raw = clients.submit(attack, plan, warmed, stop).result()
            raw |= {"normal": normal.result(), "healthz": healthz.result()}
            rss_end = rss_mb()
        report = _report(raw, rss, started, rss_end)
        report["setup"] = {
            "items": items,
            "dim": dim,
            "k": K,
            "model_input": "28x28x1 image (cnn); normal lookups by vector",
            "normal_rate_per_s": rate,
            "idle_s": idle_s,
            "filter_batches": filter_batches,
            "rounds": rounds,
            "batch_queries": BATCH,
            "bomb": f"1-bit PNG, {BOMB_SIDE}x{BOMB_SIDE} pixels, {plan.bomb_bytes} bytes",
            "index_limits": index_limits or "defaults",
            "index_build_s": round(served.build_s, 1),
            "cpus": cpu_count(),
            "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]},
            "client": (
                "three processes (normal lookups, /healthz probe, attackers); "
                "keep-alive httpx clients, one per thread, made before a phase starts; "
                "the normal client and the attacker each with a read token of their own"
            ),
        }
    write_json(out, report)
    log.info("bench.abuse_written", out=str(out))
    return report


def _report(raw: dict[str, Any], rss: RssSampler, started: float, rss_end: float) -> dict[str, Any]:
    a0, a1 = raw["abuse_window"]
    i0 = raw["idle_start"]
    idle = [s for t, s, status in raw["normal"] if i0 <= t < a0 and status == 200]
    under = [s for t, s, status in raw["normal"] if a0 <= t <= a1 and status == 200]
    p99_idle = percentiles_ms(idle)[1]
    p99_under = percentiles_ms(under)[1]
    # From the idle period on: before it, the client processes start, import and
    # connect 66 clients on the same cores (reported apart, as ``healthz_max_ms_setup``).
    healthz_max = 1000 * max(s for t, s, _ in raw["healthz"] if t >= i0)
    healthz_setup = [s for t, s, _ in raw["healthz"] if t < i0]
    healthz_under = [s for t, s, _ in raw["healthz"] if a0 <= t <= a1]
    baseline = float(np.median(rss.between(started, a0)))
    peak = max(rss.between(a0, a1 + 1.0))
    counts: dict[str, dict[str, int]] = {
        "normal_idle": _statuses(status for t, _, status in raw["normal"] if i0 <= t < a0),
        "normal_under_abuse": _statuses(status for t, _, status in raw["normal"] if t >= a0),
        "healthz": _statuses(status for _, _, status in raw["healthz"]),
    }
    phases = {}
    for name, phase in raw["phases"].items():
        counts[name] = phase["status_counts"]
        windows = phase.pop("windows")
        phases[name] = {**phase, **_during(raw, windows)}
    total: Counter[str] = Counter()
    for part in counts.values():
        total.update(part)
    counts["total"] = dict(total)
    server_errors = sum(n for status, n in total.items() if status.startswith("5"))
    timeouts = total.get("0", 0)
    ratio = p99_under / p99_idle
    return {
        "benchmark": "abuse",
        "normal_p99_ms_idle": round(p99_idle, 3),
        "normal_p99_ms_under_abuse": round(p99_under, 3),
        "normal_p99_ratio": round(ratio, 3),
        "normal_samples_idle": len(idle),
        "normal_samples_under_abuse": len(under),
        "rounds_run": raw["rounds"],
        "normal_p50_ms_idle": round(percentiles_ms(idle)[0], 3),
        "normal_p50_ms_under_abuse": round(percentiles_ms(under)[0], 3),
        "healthz_max_ms": round(healthz_max, 3),
        "healthz_max_ms_under_abuse": round(1000 * max(healthz_under, default=0.0), 3),
        "healthz_max_ms_setup": round(1000 * max(healthz_setup, default=0.0), 3),
        "rss_mb_idle": round(baseline, 1),
        "rss_mb_peak_under_abuse": round(peak, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_mb": round(peak - baseline, 1),
        "server_errors": server_errors,
        "timeouts": timeouts,
        "abuse_s": round(a1 - a0, 3),
        "status_counts": counts,
        "phases": phases,
        "targets": {
            "normal_p99_ratio_le_3": ratio <= TARGETS["normal_p99_ratio"],
            "healthz_max_lt_100ms": healthz_max < TARGETS["healthz_max_ms"],
            "rss_growth_lt_200mb": peak - baseline < TARGETS["rss_growth_mb"],
            "zero_5xx": server_errors == 0 and timeouts == 0,
        },
    }


def _during(raw: dict[str, Any], windows: list[tuple[float, float]]) -> dict[str, float | None]:
    """Normal p99 (successful lookups) and the slowest ``/healthz`` sent in the windows."""

    def inside(t: float) -> bool:
        return any(start <= t <= end for start, end in windows)

    normal = [s for t, s, status in raw["normal"] if inside(t) and status == 200]
    probes = [s for t, s, _ in raw["healthz"] if inside(t)]
    return {
        "normal_p99_ms": round(percentiles_ms(normal)[1], 3) if normal else None,
        "healthz_max_ms": round(1000 * max(probes), 3) if probes else None,
    }


def _statuses(statuses: Any) -> dict[str, int]:
    return dict(Counter(str(s) for s in statuses))
