"""The dispatcher supervisor embeds for the union of what live index nodes need."""

from __future__ import annotations

import functools

import pytest
import redis

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from workers.celery_app import make_celery
from workers.cluster.membership import GenerationState, Membership, NodeRecord
from workers.ingest.config import IngestConfig
from workers.ingest.supervisor import DispatcherSupervisor

pytestmark = pytest.mark.services


def _node(node_id: str, serving: str, generations: dict[str, GenerationState]) -> NodeRecord:
    return NodeRecord(node_id, f"http://{node_id}", 0, (0, 1), serving, generations, True)


def test_two_replicas_mid_reindex_keep_both_versions_dispatched_without_a_restart(
    settings: Settings,
) -> None:
    """Replica index-0 has flipped to v2 (v1 retained), index-1 still serves v1 and
    builds v2. They announce in turn, as their heartbeats do; the supervisor must
    keep one dispatcher per version running throughout, never stopping v1's."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    membership = Membership(redis.Redis.from_url(settings.celery_broker_url), settings.topic_items)
    flipped = _node(
        "index-0",
        "v2",
        {"v2": GenerationState("serving", True), "v1": GenerationState("retained", True)},
    )
    behind = _node(
        "index-1",
        "v1",
        {"v1": GenerationState("serving", True), "v2": GenerationState("building", False)},
    )
    supervisor = DispatcherSupervisor(
        IngestConfig.from_settings(settings),
        membership,
        functools.partial(make_celery, settings),
    )
    seen = []
    try:
        for record in [flipped, behind] * 3:
            membership.announce(record)
            supervisor.reconcile()
            seen.append(supervisor.running())
        assert supervisor.wanted() == {"v1", "v2"}
        assert set(seen[0]) == {"v1", "v2"}
        assert all(running == seen[0] for running in seen), "a dispatcher was restarted"
        assert all(thread.is_alive() for thread in seen[-1].values())
    finally:
        supervisor.stop_all()
        membership.withdraw("index-0")
        membership.withdraw("index-1")
