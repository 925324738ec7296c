"""Two `simstream beat` processes: one leads and sends one retrain per period; a standby takes over.

The retrain task runs in a real Celery worker; with no labelled data each run
reads the (empty) topic, records itself as skipped and ends in milliseconds, so
the runs record tells exactly which periods ran and how often.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.retrain.helpers import simstream
from workers.retrain import list_runs

pytestmark = [pytest.mark.slow, pytest.mark.services]

PERIOD_S, LOCK_TTL_S = 2, 3


def _beat(settings: Settings, tmp_path: Path, name: str) -> Child:
    env = settings.to_env(
        retrain_schedule=str(PERIOD_S), beat_lock_ttl_s=LOCK_TTL_S, metrics_port=0
    )
    return Child(simstream("beat"), env, tmp_path / f"{name}.log")


def _scheduled(settings: Settings) -> list[dict[str, Any]]:
    """Scheduled runs that finished, oldest first."""
    runs = [r for r in list_runs(settings.registry_dir) if r["triggered_by"] == "schedule"]
    return [r for r in reversed(runs) if r["status"] != "running"]


def _period(run: dict[str, Any]) -> int:
    return int(run["slot"].rpartition(":")[2])


def _sent(beat: Child) -> list[str]:
    return re.findall(r"beat\.retrain_sent .*?slot=(\S+)", beat.output())


def test_two_beats_send_exactly_one_retrain_per_period(
    settings: Settings, celery_worker: Celery, tmp_path: Path
) -> None:
    ensure_topics(settings, [settings.topic_items])
    beats = [_beat(settings, tmp_path, "beat-a"), _beat(settings, tmp_path, "beat-b")]
    for beat in beats:
        beat.start()
    try:
        wait_for(lambda: len(_scheduled(settings)) >= 4, timeout_s=40, interval_s=0.2)
    finally:
        for beat in beats:
            beat.stop()
    runs = _scheduled(settings)
    periods = [_period(r) for r in runs]
    assert len(periods) == len(set(periods)), f"a period ran twice: {periods}"
    assert periods == list(range(periods[0], periods[0] + len(periods))), "no period missed"
    assert all(r["reason"].startswith("not enough labelled data") for r in runs)
    sent = [_sent(beat) for beat in beats]
    assert sorted(len(s) > 0 for s in sent) == [False, True], f"one leader sends: {sent}"


def test_when_the_leading_beat_dies_the_standby_takes_over_within_the_lease_ttl(
    settings: Settings, celery_worker: Celery, tmp_path: Path
) -> None:
    ensure_topics(settings, [settings.topic_items])
    leader, standby = _beat(settings, tmp_path, "leader"), _beat(settings, tmp_path, "standby")
    leader.start()
    try:
        wait_for(lambda: _sent(leader), timeout_s=30, interval_s=0.1, message="the first send")
        standby.start()
        wait_for(lambda: "beat.starting" in standby.output(), timeout_s=30, interval_s=0.1)
        time.sleep(PERIOD_S)
        assert not _sent(standby)
        leader.kill()
        killed_at = time.monotonic()
        wait_for(lambda: _sent(standby), timeout_s=30, interval_s=0.05, message="a takeover")
        takeover_s = time.monotonic() - killed_at
    finally:
        leader.stop()
        standby.stop()
    # The lease outlives the dead leader by at most its TTL; the standby asks every
    # TTL/3, then sends at the next period boundary.
    assert takeover_s <= LOCK_TTL_S + LOCK_TTL_S / 3 + PERIOD_S + 1.0, takeover_s
    periods = [_period(r) for r in _scheduled(settings)]
    assert len(periods) == len(set(periods)), f"a period ran twice: {periods}"
