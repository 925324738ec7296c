"""The beat side: schedule parsing, aligned periods, one sending leader, the new-items trigger."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from celery.beat import ScheduleEntry
from celery.schedules import crontab

from simstream.errors import ConfigError
from simstream.kafka import ensure_topics
from simstream.settings import Settings
from tests.waiting import wait_for
from tests.workers.retrain.helpers import digits, publish_items, with_overrides
from workers.celery_app import make_celery
from workers.retrain import list_runs
from workers.retrain.config import RetrainConfig
from workers.retrain.schedule import (
    AlignedInterval,
    LeaderScheduler,
    beat_schedule,
    parse_schedule,
    slot_of,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_empty_schedule_schedules_nothing(settings: Settings) -> None:
    assert parse_schedule("") is None
    assert beat_schedule(RetrainConfig.from_settings(settings)) == {}


def test_seconds_are_an_aligned_interval_and_five_fields_a_crontab() -> None:
    interval = parse_schedule("90")
    assert isinstance(interval, AlignedInterval) and interval.period_s == 90
    cron = parse_schedule("0 3 * * 1-5")
    assert isinstance(cron, crontab)
    assert cron.hour == {3} and cron.minute == {0} and cron.day_of_week == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("text", ["0 99 * * *", "every day", "-5"])
def test_an_invalid_schedule_names_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="SIMSTREAM_RETRAIN_SCHEDULE"):
        parse_schedule(text)


def test_an_aligned_interval_is_due_once_per_period_whenever_the_beat_started() -> None:
    app = Celery(set_as_current=False)
    now = [_at(10.3)]
    every_4s = AlignedInterval(4, app=app)
    every_4s.nowfun = lambda: now[0]
    # Two beats started at different moments agree: due at 12.0, not before.
    for started in (_at(8.1), _at(11.9)):
        due, next_in = every_4s.is_due(started)
        assert not due and next_in == pytest.approx(1.7)
    now[0] = _at(12.0)
    assert every_4s.is_due(_at(11.9)).is_due
    assert not every_4s.is_due(_at(12.0)).is_due, "once per period"
    entry = ScheduleEntry(
        "retrain", "simstream.retrain", last_run_at=_at(11.9), schedule=every_4s, app=app
    )
    assert slot_of(entry, now[0]) == slot_of(entry, _at(15.99)) != slot_of(entry, _at(16.0))


def test_a_crontab_period_is_the_minute_it_was_due_even_when_sent_late() -> None:
    app = Celery(set_as_current=False)
    app.conf.timezone = "UTC"
    every_5_min = crontab(minute="*/5", app=app)
    entry = ScheduleEntry(
        "retrain", "simstream.retrain", last_run_at=_at(30), schedule=every_5_min, app=app
    )
    assert slot_of(entry, _at(300.2)) == "cron:2026-01-01T12:05"
    assert slot_of(entry, _at(361.0)) == "cron:2026-01-01T12:05"


def _finished(settings: Settings, count: int) -> list[dict[str, Any]]:
    runs = list_runs(settings.registry_dir)
    done = len(runs) == count and all(r["status"] != "running" for r in runs)
    return runs if done else []


@pytest.fixture
def beat_app(settings: Settings) -> Iterator[Celery]:
    app = make_celery(with_overrides(settings, retrain_schedule="1", beat_lock_ttl_s=3))
    app.conf.beat_schedule = beat_schedule(
        RetrainConfig.from_settings(app.conf.simstream_settings), app
    )
    yield app


@pytest.mark.services
def test_of_two_schedulers_only_the_lease_holder_sends_and_a_clean_stop_hands_over(
    beat_app: Celery,
) -> None:
    first, second = LeaderScheduler(beat_app), LeaderScheduler(beat_app)
    assert first.max_interval == pytest.approx(1.0), "beat wakes to renew every TTL/3"
    first.tick()
    second.tick()
    assert first.is_leader and not second.is_leader
    sent: list[str] = []
    entry = first.schedule["retrain"]
    second.apply_async = lambda e, *a, **k: sent.append(e.kwargs["triggered_by"])  # type: ignore[method-assign]
    second.apply_entry(entry)
    assert sent == [], "a standby sends nothing"
    first.close()
    second.tick()
    assert second.is_leader
    second.close()


@pytest.mark.services
def test_a_leader_claims_each_period_once_before_sending(settings: Settings) -> None:
    # An hourly schedule: both sends below fall in the same period, and nothing
    # else (a tick of the real beat) claims it first.
    app = make_celery(with_overrides(settings, retrain_schedule="3600", beat_lock_ttl_s=3))
    app.conf.beat_schedule = beat_schedule(
        RetrainConfig.from_settings(app.conf.simstream_settings), app
    )
    leader = LeaderScheduler(app)
    assert leader.lead()
    sent: list[tuple[str, str]] = []
    leader.apply_async = lambda e, *a, **k: sent.append(  # type: ignore[method-assign]
        (e.kwargs["triggered_by"], e.options["task_id"])
    )
    entry = leader.schedule["retrain"]
    leader.apply_entry(entry)
    leader.apply_entry(entry)  # the same period again (a second leader, a replay)
    leader.close()
    assert len(sent) == 1
    source, _, slot = sent[0][0].partition("@")
    assert source == "schedule" and slot.startswith("every-3600s:")


@pytest.mark.services
def test_enough_new_labelled_items_trigger_one_retrain(
    settings: Settings, celery_worker: Celery
) -> None:
    from workers.tasks import configure

    counted = with_overrides(settings, retrain_min_new_items=5, retrain_check_every_s=0.05)
    configure(counted)
    ensure_topics(counted, [counted.topic_items])
    ones = digits([1])
    publish_items(counted, ones[:4])
    scheduler = LeaderScheduler(celery_worker)
    try:
        scheduler.tick()
        assert scheduler.is_leader
        assert list_runs(counted.registry_dir) == [], (
            "4 new labelled items are below the threshold of 5"
        )

        publish_items(counted, ones[4:5])
        scheduler._next_check = 0
        scheduler.tick()
        runs = wait_for(lambda: _finished(counted, 1), timeout_s=30, message="a retrain run")
        assert (runs[0]["triggered_by"], runs[0]["slot"]) == ("new-items", "new-items:none")
        # one class only: the run reads the data, finds it too thin, and becomes the baseline
        assert runs[0]["reason"].startswith("not enough labelled data")

        scheduler._next_check = 0
        scheduler.tick()
        publish_items(counted, ones[5:9])
        scheduler._next_check = 0
        scheduler.tick()
        assert len(list_runs(counted.registry_dir)) == 1, (
            "4 more items since the baseline: no new run"
        )

        publish_items(counted, ones[9:10])
        scheduler._next_check = 0
        scheduler.tick()
        runs = wait_for(lambda: _finished(counted, 2), timeout_s=30, message="a second run")
        assert runs[0]["slot"] == f"new-items:{runs[1]['run_id']}"
    finally:
        scheduler.close()
