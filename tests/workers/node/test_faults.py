"""Crash tests: SIGKILL of the index node with records applied past its last snapshot.

The node runs alone in a process that reports how far it has applied its log;
snapshots are taken every few hundred records. Each test kills the node once it
has applied records that no snapshot holds — before its first snapshot, or past
a later one — asserts that it had, restarts it, and requires its final snapshot
to equal the expected state exactly: the restarted node replays the log from
its snapshot (or from the start) and applies the replayed records idempotently.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.faults import EmbeddingsLog, ingest_with_kill, with_fast_recovery
from tests.workers.node.node_process import read_status
from tests.workers.pipeline import assert_index_matches, items_end
from workers.index.config import IndexConfig
from workers.index.snapshot import SnapshotStore
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.services]

#: Past the snapshot: per partition, the applied next offset above the snapshot's.
Unsaved = dict[int, int]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Quick recovery, slowed embed batches, a snapshot every 400 records (not by time)."""
    return with_fast_recovery(settings, snapshot_every_s=600.0, snapshot_every_records=400)


@pytest.fixture
def dispatching(settings: Settings, encoder_version: str, celery_worker: Celery) -> Iterator[str]:
    """A dispatcher thread feeding the real Celery worker; yields the encoder version."""
    ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    stop = threading.Event()
    dispatcher = Dispatcher(
        IngestConfig.from_settings(settings), encoder_version, celery_app=celery_worker
    )
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    yield encoder_version
    stop.set()
    thread.join(30)


def _snapshot_offsets(store: SnapshotStore) -> dict[int, int] | None:
    """The next embeddings offsets of the newest snapshot (None: no snapshot yet)."""
    snapshots = store.list()
    if not snapshots or snapshots[0].manifest is None:
        return None
    return {int(p): int(o) for p, o in snapshots[0].manifest["next_offsets"].items()}


@pytest.mark.parametrize(
    "snapshotted", [False, True], ids=["before-any-snapshot", "past-a-snapshot"]
)
def test_an_index_node_killed_past_its_snapshot_recovers_from_it_and_the_log_exactly(
    settings: Settings, dispatching: str, tmp_path: Path, snapshotted: bool
) -> None:
    status = tmp_path / "node-status.json"
    node = Child(
        [sys.executable, "-m", "tests.workers.node.node_process", str(status)],
        settings.to_env(),
        tmp_path / "node.log",
    )
    node.start()
    wait_for(status.exists, timeout_s=120, interval_s=0.1, message="the node serving")
    store = SnapshotStore.from_settings(settings, dispatching)

    def unsaved() -> Unsaved | None:
        """Records the node applied past its newest snapshot (which exists or not)."""
        applied = read_status(status)
        saved = _snapshot_offsets(store)
        if not applied or (saved is not None) != snapshotted:
            return None
        return {p: o for p, o in applied.items() if o > (saved or {}).get(p, 0)} or None

    def interrupted(seen: Unsaved) -> Unsaved:
        """The applied records that no snapshot held when the node died."""
        saved = _snapshot_offsets(store) or {}
        assert snapshotted == bool(saved), f"snapshot expected: {snapshotted}, found {saved}"
        lost = {p: o for p, o in seen.items() if o > saved.get(p, 0)}
        assert lost, f"the snapshot {saved} held everything applied {seen}"
        status.unlink()  # the restarted node reports afresh
        return lost

    embeddings = EmbeddingsLog(settings, dispatching)
    try:
        expected, _ = ingest_with_kill(settings, node, unsaved, interrupted)
        ends = items_end(settings)

        def applied_everything() -> bool:
            if not embeddings.poll().accounts_for(ends):
                return False
            applied = read_status(status)
            return all(applied.get(p, 0) >= end for p, end in embeddings.ends.items())

        wait_for(applied_everything, timeout_s=180, interval_s=0.2, message="the node caught up")
        node.stop()
        loaded = store.load_latest_state(IndexConfig.from_settings(settings, dim=8))
        assert loaded is not None
        assert_index_matches(loaded.index, expected)
    finally:
        embeddings.close()
        node.stop()
