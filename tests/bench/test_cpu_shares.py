from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.cpu_shares import shares, snapshot

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


def test_a_childs_cpu_time_is_counted_under_its_role_and_the_benchmarks_under_its_own() -> None:
    root = os.getpid()
    before = snapshot(root)
    child = subprocess.Popen([sys.executable, "-c", BURN + "# role-burner"])
    child.wait(30)  # reaped: gone from /proc, so it is left out
    waiting = subprocess.Popen([sys.executable, "-c", BURN + "time.sleep(5)  # role-burner"])
    try:
        time.sleep(0.1)
        end = time.process_time() + 0.2
        while time.process_time() < end:  # this process burns too
            pass
        deadline = time.monotonic() + 10
        while (
            snapshot(root).get(waiting.pid) is None
            or shares(before, snapshot(root), {"burner": "role-burner"}, root).get("burner", 0.0)
            < 0.35
        ):
            assert time.monotonic() < deadline, "the burner's CPU time never showed"
            time.sleep(0.05)
        spent = shares(before, snapshot(root), {"burner": "role-burner"}, root)
    finally:
        waiting.kill()
        waiting.wait(10)

    assert 0.35 <= spent["burner"] < 0.8  # the live child only: the reaped one is gone
    assert spent["benchmark"] >= 0.15
    assert set(spent) <= {"burner", "benchmark", "other"}


def test_a_snapshot_holds_the_root_and_what_is_below_it_only() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN + "# role-child"])
    try:
        assert child.pid in snapshot(os.getpid())
        below_child = snapshot(child.pid)
        assert set(below_child) == {child.pid}  # its parent, this process, is not below it
        assert "role-child" in below_child[child.pid].command
    finally:
        child.kill()
        child.wait(10)
