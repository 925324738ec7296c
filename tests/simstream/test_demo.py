"""`simstream demo` (= `make run`) run twice on the same data directory and ports: the
second run starts a fresh in-memory broker, reuses the trained model, and serves
the digits again (the node discards snapshots of the first run's log)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simstream.stack.local import local_stack_settings


@pytest.mark.services
@pytest.mark.slow
def test_a_second_demo_on_the_same_data_directory_serves_the_digits_again(
    tmp_path: Path,
) -> None:
    settings = local_stack_settings(
        tmp_path / "var", metrics_port=0, worker_processes=1, stack_start_timeout_s=300
    )
    env = {**os.environ, **settings.to_env()}
    argv = [sys.executable, "-m", "simstream.cli.main", "demo", "--items", "60"]
    argv += ["--epochs", "1", "--exit"]

    runs = [
        subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        for _ in range(2)
    ]

    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "label agreement of the neighbours" in run.stdout
    assert "registered and promoted v1" in runs[0].stdout
    assert "registered and promoted" not in runs[1].stdout
    assert "serving model v1" in runs[1].stdout
