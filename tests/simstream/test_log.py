"""simstream.log: where log lines go before and after `configure_logging`."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; its output, as text."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


LOG_BEFORE_CONFIGURING = """
from simstream.log import get_logger
get_logger("probe").info("probe.logged", n=1)
print("answer")
"""


def test_a_line_logged_before_logging_is_configured_goes_to_stderr_not_stdout() -> None:
    done = _python(LOG_BEFORE_CONFIGURING)

    assert done.stdout == "answer\n"
    assert "probe.logged" in done.stderr


LOG_TO_A_REPLACED_STDERR = """
import io, sys
from simstream.log import get_logger
replaced, sys.stderr = io.StringIO(), io.StringIO()
sys.stderr.close()  # the stream seen at import is gone, as under a test runner's capture
sys.stderr = replaced
get_logger("probe").info("probe.now")
print(replaced.getvalue())
"""


def test_before_configuring_a_line_goes_to_the_standard_error_of_the_moment() -> None:
    done = _python(LOG_TO_A_REPLACED_STDERR)

    assert "probe.now" in done.stdout
