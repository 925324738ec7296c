from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "hello_world.py"


def test_the_hello_world_is_at_most_twenty_lines() -> None:
    assert len(SCRIPT.read_text().splitlines()) <= 20


def test_the_hello_world_trains_indexes_and_finds_each_digits_own_class() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600, check=True
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("digit ")]
    assert len(lines) == 10
    hits = [re.match(r"digit (\d) → (\d) at", line) for line in lines]
    assert sum(m is not None and m.group(1) == m.group(2) for m in hits) >= 9, run.stdout
