"""Redis coordination: leases are exclusive and expire; a period is claimed once."""

from __future__ import annotations

import time

import pytest
import redis

from simstream.settings import Settings
from tests.waiting import wait_for
from workers.retrain.config import RetrainConfig
from workers.retrain.coordination import (
    Lease,
    claim_slot,
    coordination_redis,
    parse_trigger,
    release_slot,
    slot_key,
)

pytestmark = pytest.mark.services


@pytest.fixture
def client(settings: Settings) -> redis.Redis:
    return coordination_redis(RetrainConfig.from_settings(settings))


def test_a_lease_has_one_holder_until_it_is_released(client: redis.Redis) -> None:
    first, second = Lease(client, "test:lease:a", 5), Lease(client, "test:lease:a", 5)
    assert first.acquire()
    assert not second.acquire()
    assert first.renew()
    first.release()
    assert second.acquire()
    assert not first.renew(), "a released lease cannot be renewed by its old holder"
    second.release()


def test_a_lease_whose_holder_stops_renewing_expires_and_passes_on(client: redis.Redis) -> None:
    dead, standby = Lease(client, "test:lease:b", 1), Lease(client, "test:lease:b", 1)
    assert dead.acquire()
    started = time.monotonic()
    wait_for(standby.acquire, timeout_s=5, interval_s=0.05, message="the lease to pass on")
    assert 0.8 < time.monotonic() - started < 2.0
    assert not dead.renew()
    dead.release()  # a lost lease is left to its new holder
    assert client.exists("test:lease:b")
    standby.release()


def test_a_kept_alive_lease_outlives_its_ttl_and_is_released_at_the_end(
    client: redis.Redis,
) -> None:
    lease, other = Lease(client, "test:lease:c", 1), Lease(client, "test:lease:c", 1)
    assert lease.acquire()
    with lease.kept_alive() as lost:
        time.sleep(2.5)
        assert not other.acquire()
        assert not lost.is_set()
    assert other.acquire()
    other.release()


def test_a_kept_alive_lease_taken_over_reports_itself_lost(client: redis.Redis) -> None:
    lease = Lease(client, "test:lease:d", 1.5)
    assert lease.acquire()
    with lease.kept_alive() as lost:
        client.set("test:lease:d", "someone else")
        assert lost.wait(3)
    assert client.get("test:lease:d") == b"someone else"
    client.delete("test:lease:d")


def test_a_period_is_claimed_once_and_its_owner_may_claim_it_again(
    settings: Settings, client: redis.Redis
) -> None:
    config = RetrainConfig.from_settings(settings)
    assert claim_slot(client, config, "every-2s:100", "task-a")
    assert not claim_slot(client, config, "every-2s:100", "task-b")
    assert claim_slot(client, config, "every-2s:100", "task-a"), "a redelivered task runs"
    assert claim_slot(client, config, "every-2s:101", "task-b")
    assert 0 < client.ttl(slot_key(config, "every-2s:100")) <= 24 * 3600


def test_only_the_owner_releases_a_claim(settings: Settings, client: redis.Redis) -> None:
    config = RetrainConfig.from_settings(settings)
    assert claim_slot(client, config, "new-items:r1", "task-a")
    release_slot(client, config, "new-items:r1", "task-b")
    assert not claim_slot(client, config, "new-items:r1", "task-b")
    release_slot(client, config, "new-items:r1", "task-a")
    assert claim_slot(client, config, "new-items:r1", "task-b")


@pytest.mark.parametrize(
    ("triggered_by", "expected"),
    [
        ("schedule@every-2s:5", ("schedule", "every-2s:5")),
        ("manual", ("manual", None)),
        ("new-items@new-items:abc", ("new-items", "new-items:abc")),
        ("@", ("unknown", None)),
    ],
)
def test_a_trigger_names_its_source_and_period(
    triggered_by: str, expected: tuple[str, str | None]
) -> None:
    assert parse_trigger(triggered_by) == expected
