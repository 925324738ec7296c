"""Per-client budgets of the node's CPU time: a client that keeps the node busy waits
its turn while others compete, and only then."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Receive, Scope, Send

from workers.api import client_budget
from workers.api.client_budget import ClientBudgetMiddleware, ClientBudgets, charge_waits
from workers.api.config import ClientBudgetConfig

CONFIG = ClientBudgetConfig(busy_per_s=1.0, burst_s=0.5, tarpit_s=0.05, contended_s=1.0)
SLOW = ClientBudgetConfig(busy_per_s=0.1, burst_s=0.5, tarpit_s=0.05, contended_s=2.0)
"""Refills slowly: a test's steps take wall time."""


class _Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_cpu_time_is_shared_out_among_the_requests_in_flight() -> None:
    clock, cpu = _Clock(), _Clock(0.0)
    budgets = ClientBudgets(CONFIG, clock, cpu)
    for client in ("a", "a", "a", "b"):
        assert budgets.admit(client) is None
        budgets.started(client)
    cpu.now += 0.4  # three of a's requests and one of b's share 0.4 CPU-seconds
    budgets.ended("b")
    assert budgets.level("a") == pytest.approx(0.5 - 0.3)
    assert budgets.level("b") == pytest.approx(0.5 - 0.1)

    cpu.now += 2.0  # a alone: its debt stops at one burst
    assert budgets.level("a") == pytest.approx(-0.5)
    assert budgets.level("b") == pytest.approx(0.4), "b had nothing in flight"


class _CountingCpu(_Clock):
    def __init__(self) -> None:
        super().__init__(0.0)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def test_enter_and_leave_charge_like_admit_started_ended_done_with_fewer_cpu_reads() -> None:
    clock, cpu = _Clock(), _CountingCpu()
    budgets = ClientBudgets(replace(CONFIG, max_inflight=2), clock, cpu)
    reads = cpu.reads
    for client in ("a", "a", "b"):
        assert budgets.enter(client) is None
    assert cpu.reads - reads == 3, "one read of the CPU clock per request entering"
    refusal = budgets.enter("a")
    assert refusal is not None and refusal.reason == "held", "a's two requests are held"
    cpu.now += 0.3  # two of a's requests and one of b's share 0.3 CPU-seconds
    budgets.leave("b")
    assert budgets.level("a") == pytest.approx(0.5 - 0.2)
    assert budgets.level("b") == pytest.approx(0.5 - 0.1)
    budgets.leave("a")
    assert budgets.enter("a") is None, "one of a's requests was answered: a holds one again"
    budgets.leave("a")
    budgets.leave("a")
    assert budgets._inflight == {} and budgets._held == {} and budgets._total == 0


def test_a_client_over_its_budget_is_refused_only_while_another_client_is_seen() -> None:
    clock, cpu = _Clock(), _Clock(0.0)
    budgets = ClientBudgets(CONFIG, clock, cpu)
    budgets.admit("a")
    budgets.started("a")
    cpu.now += 1.0
    budgets.ended("a")

    clock.now += 0.1
    assert budgets.admit("a") is None, "alone on the node, a client is lent everything"
    assert budgets.admit("b") is None
    clock.now += 0.1
    refusal = budgets.admit("a")
    assert refusal is not None and refusal.reason == "budget", "b was seen: a is refused"
    assert refusal.retry_s == pytest.approx(0.3), "until its debt is repaid"
    assert budgets.admit("b") is None, "b has credit"

    clock.now += 0.31
    assert budgets.admit("a") is None, "the bucket refilled"
    budgets.started("a")
    cpu.now += 5.0
    budgets.ended("a")
    clock.now += CONFIG.contended_s + 0.01
    assert budgets.admit("a") is None, "b has not been seen for a while: a is served"


def test_a_client_holding_its_cap_is_refused_while_others_compete_and_only_then() -> None:
    clock = _Clock()
    budgets = ClientBudgets(replace(CONFIG, max_inflight=2), clock, _Clock(0.0))
    assert budgets.admit("b") is None
    budgets.done("b")
    assert budgets.admit("a") is None
    assert budgets.admit("a") is None
    refusal = budgets.admit("a")
    assert refusal is not None and refusal.reason == "held"
    budgets.done("a")
    assert budgets.admit("a") is None, "one of a's requests was answered"

    clock.now += CONFIG.contended_s + 0.01
    assert budgets.admit("a") is None, "alone, a may hold more"


def test_the_buckets_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_budget, "MAX_CLIENTS", 8)
    clock = _Clock()
    budgets = ClientBudgets(CONFIG, clock, _Clock(0.0))
    for n in range(100):
        assert budgets.admit(f"client-{n}") is None
        budgets.done(f"client-{n}")
        clock.now += 0.001
    assert len(budgets._buckets) <= 8
    assert "client-99" in budgets._buckets, "the newest client keeps its bucket"


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """Spends ``?busy=S`` CPU-seconds, then waits ``?wait=S`` seconds for a write."""
    params = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
    _burn(float(params.get("busy", 0)))
    async with charge_waits():
        await asyncio.sleep(float(params.get("wait", 0)))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _middleware(config: ClientBudgetConfig = SLOW) -> ClientBudgetMiddleware:
    return ClientBudgetMiddleware(_app, config, known_token=lambda t: t in {"ta", "tb"})


def _client(app: ASGIApp, token: str | None = None, host: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 5000))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=transport, base_url="http://node", headers=headers)


def _key(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _rejected() -> float:
    labels = {"route_class": "client_budget"}
    return REGISTRY.get_sample_value("simstream_api_rejected_requests_total", labels) or 0.0


def test_a_busy_token_is_answered_429_after_the_tarpit_while_another_token_is_served() -> None:
    async def scenario() -> None:
        app = _middleware()
        async with _client(app, "ta") as a, _client(app, "tb") as b:
            assert (await b.get("/v1/stats")).status_code == 200  # b is seen
            assert (await a.get("/v1/stats?busy=0.7")).status_code == 200  # a spends its burst
            before = _rejected()
            began = time.monotonic()
            refused = await a.get("/v1/stats")
            took = time.monotonic() - began
            served = await b.get("/v1/stats")
            probe = await a.get("/healthz")

        assert refused.status_code == 429
        assert took >= SLOW.tarpit_s, "a refusal is answered after the tarpit"
        assert int(refused.headers["Retry-After"]) >= 1
        assert "SIMSTREAM_API_CLIENT_BUSY_PER_S" in refused.json()["detail"]
        assert _rejected() == before + 1
        assert served.status_code == 200, "another client is not charged for a's time"
        assert probe.status_code == 200, "probes are never refused"

    asyncio.run(scenario())


def test_clients_are_tokens_when_valid_else_addresses() -> None:
    async def scenario() -> None:
        app = _middleware()
        async with (
            _client(app, "ta", host="10.0.0.1") as a,
            _client(app, "nope", host="10.0.0.1") as forged,
            _client(app, "nope2", host="10.0.0.1") as forged_again,
            _client(app, None, host="10.0.0.2") as other,
        ):
            await other.get("/v1/stats")
            await a.get("/v1/stats?busy=0.7")
            assert (await a.get("/v1/stats")).status_code == 429
            # an unknown token is its address, not a fresh bucket per forged token
            assert (await forged.get("/v1/stats?busy=0.7")).status_code == 200
            assert (await forged_again.get("/v1/stats")).status_code == 429
        keys = list(app.budgets._buckets)
        assert {_key("ta"), "address:10.0.0.1", "address:10.0.0.2"} <= set(keys)
        assert not any("ta" in k.split(":", 1)[1] for k in keys), "no raw token is kept"

    asyncio.run(scenario())


def test_time_waiting_for_a_write_is_not_charged() -> None:
    async def scenario() -> None:
        app = _middleware()
        async with _client(app, "ta") as a, _client(app, "tb") as b:
            levels: dict[str, float] = {}

            async def work_while_b_waits() -> None:
                await asyncio.sleep(0.2)
                await a.get("/v1/stats?busy=0.3")
                levels.update(a=app.budgets.level(_key("ta")), b=app.budgets.level(_key("tb")))

            waits = [b.get("/v1/stats?wait=1.0") for _ in range(4)]
            await asyncio.gather(work_while_b_waits(), *waits)
            level_a, level_b = levels["a"], levels["b"]
            assert level_b > 0.45, "b's four requests waited: they spent no CPU"
            assert level_a < 0.25, "a's work is charged to a"

    asyncio.run(scenario())


def test_budgets_are_off_at_zero() -> None:
    async def scenario() -> None:
        app = _middleware(ClientBudgetConfig(busy_per_s=0.0))
        async with _client(app, "ta") as a, _client(app, "tb") as b:
            await b.get("/v1/stats")
            for _ in range(3):
                assert (await a.get("/v1/stats?busy=0.3")).status_code == 200

    asyncio.run(scenario())
