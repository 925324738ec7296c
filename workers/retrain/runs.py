"""The record of retrain runs: ``runs.jsonl`` beside the model registry.

One JSON object per line, appended under an exclusive ``flock`` and fsynced. A
run writes a ``running`` line when it starts and its final line when it ends;
both carry its ``run_id``, and `list_runs` shows the newest state of each run.
A run whose last line is ``running`` either is still going or crashed (its
``host`` and ``pid`` say where). The file lives in the registry directory, which
every process that needs it (workers, beat, API) mounts anyway.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simstream.log import get_logger

log = get_logger("retrain.runs")

RUNS_FILE = "runs.jsonl"
READ_DATA = ("promoted", "rejected", "skipped")


def runs_path(registry_dir: Path) -> Path:
    """Where runs are recorded."""
    return registry_dir / RUNS_FILE


def append_run(registry_dir: Path, record: Mapping[str, Any]) -> None:
    """Append one run record (a JSON object with a ``run_id``) durably."""
    path = runs_path(registry_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), separators=(",", ":"), default=str) + "\n"
    with path.open("a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def list_runs(registry_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Every run's newest record, newest run first (at most ``limit``).

    Unreadable lines (a torn write after a crash) are skipped.
    """
    path = runs_path(registry_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    runs: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            run_id = str(record["run_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("retrain.run_record_unreadable", path=str(path), line=number)
            continue
        runs[run_id] = record  # a later line updates the run in place
    newest_first = list(reversed(runs.values()))
    return newest_first[:limit] if limit is not None else newest_first


def last_run_with_data(registry_dir: Path) -> dict[str, Any] | None:
    """The newest run that read the items and did not fail, if any.

    That is a promoted or rejected run, or one skipped for lack of data: the
    baseline from which new labelled items are counted.
    """
    for record in list_runs(registry_dir):
        if record.get("decision") in READ_DATA and record.get("source_offsets") is not None:
            return record
    return None


def completed_run(registry_dir: Path, task_id: str) -> dict[str, Any] | None:
    """The run that task ``task_id`` completed (finished or failed past the lease), if any.

    A redelivered copy of a task that already ran must not run again; a task
    whose run is still ``running`` (its worker crashed) may.
    """
    for record in list_runs(registry_dir):
        if (
            record.get("task_id") == task_id
            and record.get("leased")
            and record.get("status") in ("finished", "failed")
        ):
            return record
    return None
