"""Celery beat for retraining: the schedule, a Redis leader lease, one run per period.

`run_beat` runs Celery beat with `LeaderScheduler`, in memory (no schedule file):

- **Schedule** (``retrain_schedule``): empty schedules nothing, though beat
  still runs; a number of seconds is an `AlignedInterval`, due at every
  multiple of the period since the Unix epoch, so all beats agree on period
  boundaries; five crontab fields are Celery's `crontab`, in UTC.
- **One active beat**: each tick the scheduler takes or renews the lease
  ``simstream:beat-leader:<topic>`` (``SET NX PX``, TTL ``beat_lock_ttl_s``,
  renewed every TTL/3 — beat never sleeps longer). A beat without the lease
  sends nothing. **Failover**: a leader that dies keeps the lease at most TTL;
  a standby asks every TTL/3, so it sends within TTL + TTL/3 of the death
  (20 s with the default 15 s); a leader that stops cleanly releases it at once.
- **One run per period**, even with two beats sending (a network partition, a
  leader paused past its TTL): every message names its period (the slot) and
  carries a task id chosen before sending. The beat claims the slot for that
  id (`claim_slot`, ``SET NX``) and sends only if the claim is its own; the
  task claims it again with its own id (`run_retrain`), so a message from
  anywhere else for a claimed period is skipped, while a redelivery of the
  same task (after a worker crash) still runs.
- **New labelled items** (``retrain_min_new_items`` > 0): every
  ``retrain_check_every_s`` the leader counts labelled upserts in ``items``
  since the end offsets read by the last run that did not fail
  (``runs.jsonl``) and, at the threshold, sends ``retrain`` for the slot
  ``new-items:<that run's id>``: at most one such run per baseline (a failed
  one releases its slot, so the next check tries again). Nothing is counted
  while a retrain runs.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery, beat
from celery.schedules import crontab, schedstate, schedule

from simstream.errors import ConfigError, SimstreamError
from simstream.log import get_logger
from simstream.signals import stop_on_signals
from workers.celery_app import RETRAIN_TASK
from workers.retrain.config import RetrainConfig
from workers.retrain.coordination import (
    NEW_ITEMS,
    SCHEDULE,
    SLOT_SEPARATOR,
    Lease,
    claim_slot,
    coordination_redis,
    leader_key,
    retrain_running,
    slot_key,
)

log = get_logger("beat")

ENTRY = "retrain"


class AlignedInterval(schedule):  # type: ignore[misc]
    """Due every ``seconds``, at multiples of ``seconds`` since the Unix epoch.

    Args:
        seconds: the period.
        app: the Celery app (for its clock).
    """

    def __init__(self, seconds: float, app: Celery | None = None) -> None:
        super().__init__(run_every=timedelta(seconds=seconds), app=app)
        self.period_s = float(seconds)

    def slot(self, when: datetime) -> int:
        """Index of the period ``when`` falls in."""
        return math.floor(self.maybe_make_aware(when).timestamp() / self.period_s)

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due once the clock has entered a later period than ``last_run_at``'s."""
        now = self.maybe_make_aware(self.now())
        current = self.slot(now)
        until_next = (current + 1) * self.period_s - now.timestamp()
        return schedstate(current > self.slot(last_run_at), max(until_next, 0.001))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the period after ``last_run_at``'s begins (negative when passed)."""
        boundary = (self.slot(last_run_at) + 1) * self.period_s
        return timedelta(seconds=boundary - self.maybe_make_aware(self.now()).timestamp())

    def __repr__(self) -> str:
        return f"<aligned every {self.period_s:g} s>"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.period_s,)


def parse_schedule(text: str, app: Celery | None = None) -> AlignedInterval | crontab | None:
    """The retrain schedule from its setting: None, an aligned interval or a crontab.

    Raises:
        ConfigError: on an invalid value.
    """
    text = text.strip()
    if not text:
        return None
    fields = text.split()
    try:
        if len(fields) == 1 and float(text) > 0:
            return AlignedInterval(float(text), app=app)
        if len(fields) == 5:
            minute, hour, day_of_month, month_of_year, day_of_week = fields
            return crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
                app=app,
            )
    except ValueError as e:
        raise ConfigError(
            f"Invalid value for SIMSTREAM_RETRAIN_SCHEDULE. Expected seconds or 5 crontab "
            f"fields. Received: {text!r} ({e})"
        ) from None
    raise ConfigError(
        "Invalid value for SIMSTREAM_RETRAIN_SCHEDULE. Expected empty, seconds or 5 crontab "
        f"fields. Received: {text!r}"
    )


def beat_schedule(config: RetrainConfig, app: Celery | None = None) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule``: the retrain entry, or nothing when no schedule is set."""
    when = parse_schedule(config.retrain_schedule, app)
    if when is None:
        return {}
    return {ENTRY: {"task": RETRAIN_TASK, "schedule": when, "kwargs": {"triggered_by": SCHEDULE}}}


def slot_of(entry: beat.ScheduleEntry, now: datetime | None = None) -> str:
    """The period a due entry fires for: ``every-<s>s:<n>`` or ``cron:<UTC minute>``.

    ``entry`` is the entry as it was before this firing (its ``last_run_at`` is
    the previous one), which is what `beat.Scheduler.apply_entry` receives.
    """
    when = entry.schedule
    now = now or datetime.now(UTC)
    if isinstance(when, AlignedInterval):
        return f"every-{when.period_s:g}s:{when.slot(now)}"
    occurrence = now
    if isinstance(when, crontab) and entry.last_run_at is not None:
        start, until_due, _ = when.remaining_delta(when.maybe_make_aware(entry.last_run_at))
        occurrence = min(start + until_due, now)
    return "cron:" + occurrence.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


class LeaderScheduler(beat.Scheduler):  # type: ignore[misc]
    """A beat scheduler that sends only while it holds the leader lease.

    Its config is built from the app's settings (``app.conf.simstream_settings``,
    set by `make_celery`); ``client`` may hand it a ready Redis client.
    """

    def __init__(self, app: Celery, *args: Any, client: redis.Redis | None = None, **kwargs: Any):
        self.config = RetrainConfig.from_settings(app.conf.simstream_settings)
        self.client = client or coordination_redis(self.config)
        self.lease = Lease(self.client, leader_key(self.config), self.config.beat_lock_ttl_s)
        self.renew_every_s = self.config.beat_lock_ttl_s / 3
        self.is_leader = False
        self._next_check = 0.0
        kwargs["max_interval"] = min(kwargs.get("max_interval") or math.inf, self.renew_every_s)
        super().__init__(app, *args, **kwargs)

    # --- leadership ------------------------------------------------------------------

    def lead(self) -> bool:
        """Take or renew the leader lease; return whether this beat leads now."""
        try:
            held = self.lease.renew() if self.is_leader else self.lease.acquire()
        except redis.RedisError as e:
            log.warning("beat.lease_unreachable", error=str(e))
            held = False
        if held != self.is_leader:
            log.info("beat.leadership_changed", leader=held, key=self.lease.key)
        self.is_leader = held
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Renew leadership, send what is due (when leading), check new items."""
        self.lead()
        delay = float(super().tick(*args, **kwargs))
        if self.is_leader:
            self.check_new_items()
        return min(delay, self.renew_every_s)

    def close(self) -> None:
        """Release the lease (a standby may take over at once), then close as beat does."""
        if self.is_leader:
            try:
                self.lease.release()
            except redis.RedisError as e:
                log.warning("beat.lease_not_released", error=str(e))
            self.is_leader = False
        super().close()

    # --- sending ---------------------------------------------------------------------

    def apply_entry(self, entry: beat.ScheduleEntry, producer: Any = None) -> None:
        """Send a due entry for its period, if this beat leads and the period is unclaimed."""
        if not self.is_leader:
            log.debug("beat.not_leader", entry=entry.name)
            return
        slot = slot_of(entry)
        task_id = self.claim(slot)
        if task_id is None:
            return
        sent = copy.copy(entry)
        source = entry.kwargs.get("triggered_by", SCHEDULE)
        sent.kwargs = {**entry.kwargs, "triggered_by": f"{source}{SLOT_SEPARATOR}{slot}"}
        sent.options = {**entry.options, "task_id": task_id}
        log.info("beat.retrain_sent", slot=slot, task_id=task_id)
        super().apply_entry(sent, producer)

    def claim(self, slot: str) -> str | None:
        """Claim ``slot`` for a new task id; None when it is claimed already or Redis fails."""
        task_id = str(uuid.uuid4())
        try:
            if claim_slot(self.client, self.config, slot, task_id):
                return task_id
        except redis.RedisError as e:
            log.warning("beat.slot_not_claimed", slot=slot, error=str(e))
            return None
        log.info("beat.slot_already_claimed", slot=slot)
        return None

    def check_new_items(self) -> None:
        """Every ``retrain_check_every_s``: trigger a retrain when enough labelled items arrived."""
        threshold = self.config.retrain_min_new_items
        now = time.monotonic()
        if not threshold or now < self._next_check:
            return
        self._next_check = now + self.config.retrain_check_every_s
        try:
            slot = new_items_slot(self.config, self.client, timeout_s=self.renew_every_s)
        except (SimstreamError, redis.RedisError, OSError) as e:
            log.warning("beat.new_items_not_counted", error=str(e))
            return
        # Counting takes time: make sure this beat still leads before it claims and sends.
        task_id = self.claim(slot) if slot and self.lead() else None
        if slot and task_id:
            log.info("beat.retrain_sent_for_new_items", slot=slot, task_id=task_id)
            self.app.send_task(
                RETRAIN_TASK,
                kwargs={"triggered_by": f"{NEW_ITEMS}{SLOT_SEPARATOR}{slot}"},
                task_id=task_id,
            )


def new_items_slot(
    config: RetrainConfig, client: redis.Redis, timeout_s: float = 60.0
) -> str | None:
    """The slot to trigger a retrain for, when ``retrain_min_new_items`` labelled items arrived.

    None while a retrain runs, below the threshold, or when the slot is claimed.
    Reading ``items`` gives up after ``timeout_s`` without progress.
    """
    from workers.retrain.dataset import count_new_labelled
    from workers.retrain.runs import last_run_with_data

    if retrain_running(client, config):
        return None
    last = last_run_with_data(config.registry_dir)
    slot = f"{NEW_ITEMS}:{last['run_id'] if last else 'none'}"
    if client.exists(slot_key(config, slot)):
        return None
    since = {int(p): int(o) for p, o in ((last or {}).get("source_offsets") or {}).items()}
    threshold = config.retrain_min_new_items
    count = count_new_labelled(config, since, limit=threshold, idle_timeout_s=timeout_s)
    log.debug("beat.new_labelled_items", count=count, threshold=threshold, since=since)
    return slot if count >= threshold else None


def run_beat(config: RetrainConfig, app: Celery) -> None:
    """Run Celery beat with the retrain schedule until SIGTERM or SIGINT.

    Several beats may run (standbys); only the holder of the leader lease sends.

    Args:
        config: the retrain config (schedule, lease TTL).
        app: the Celery app beat sends with (`make_celery`).
    """
    app.conf.beat_schedule = beat_schedule(config, app)
    service = beat.Service(
        app, scheduler_cls=LeaderScheduler, max_interval=config.beat_lock_ttl_s / 3
    )
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(raise_exit=True)
    log.info(
        "beat.starting",
        schedule=config.retrain_schedule or None,
        min_new_items=config.retrain_min_new_items or None,
        lock_ttl_s=config.beat_lock_ttl_s,
    )
    service.start()
