"""`simstream worker` as deployed: a prefork worker preloads every child, which die with it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from simstream.settings import Settings
from tests.processes import Child
from tests.waiting import wait_for
from tests.workers.conftest import register_encoder
from workers.ingest.device import cpu_cores

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_prefork_worker_preloads_each_child_and_they_die_with_it(
    settings: Settings, encoder_version: str, tmp_path: Path
) -> None:
    worker = Child(
        [sys.executable, "-m", "simstream.cli.main", "worker", "--concurrency", "2"],
        settings.to_env(metrics_port=0),
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        wait_for(
            lambda: worker.output().count("tasks.encoder_loaded") >= 2,
            timeout_s=180,
            message="both children loaded the encoder",
        )
        threads = max(1, cpu_cores() // 2)
        assert f"pool prefork, 2 encoder process(es), {threads} CPU thread(s) each" in (
            worker.output()
        )
        assert worker.process is not None
        children = _children(worker.process.pid)
        assert len(children) >= 2
        loaded_in = {
            int(line.split("pid=")[1].split()[0])
            for line in worker.output().splitlines()
            if "tasks.encoder_loaded" in line
        }
        assert loaded_in <= children and os.getpid() not in loaded_in
        worker.kill()
        wait_for(
            lambda: not any(_alive(pid) for pid in children),
            timeout_s=15,
            message="the children died with their parent",
        )
    finally:
        worker.stop()


def test_a_worker_keeps_two_encoder_versions_and_releases_the_least_recently_used(
    settings: Settings,
) -> None:
    from workers import tasks

    versions = [register_encoder(settings, "vector", seed=i) for i in range(3)]
    tasks.configure(settings)
    try:
        first = tasks.embedder_for(versions[0])
        tasks.embedder_for(versions[1])
        assert tasks.embedder_for(versions[0]) is first  # used again: now the most recent
        tasks.embedder_for(versions[2])

        assert tasks.loaded_versions() == [versions[0], versions[2]]
        assert tasks.embedder_for(versions[1]).encoder.version == versions[1]  # loaded again
        assert tasks.loaded_versions() == [versions[2], versions[1]]
    finally:
        tasks.configure(settings)
