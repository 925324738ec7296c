"""simstream.log: where log lines go before and after `configure_logging`."""

from __future__ import annotations

import subprocess
import sys

LOG_BEFORE_CONFIGURING = """
from simstream.log import get_logger
get_logger("probe").info("probe.logged", n=1)
print("answer")
"""


def test_a_line_logged_before_logging_is_configured_goes_to_stderr_not_stdout() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOG_BEFORE_CONFIGURING],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert done.stdout == "answer\n"
    assert "probe.logged" in done.stderr
