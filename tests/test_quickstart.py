"""docs/quickstart-own-data.md, run as written: every ``simstream`` and ``curl`` command
of its bash blocks, in order, on a small generated image folder, against a real
`simstream up` (broker, Valkey, worker, dispatcher, index node and API).

Only the installation lines (``make …``, ``. .venv/bin/activate``) are skipped: the
test runs in the project's venv. The stack gets free ports, so ``localhost:8000``
is replaced by the API's port. ``simstream stats`` is run until the items
published so far are searchable, as the page tells the reader to do.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simstream.stack.local import local_stack_settings
from tests.processes import Child
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "docs" / "quickstart-own-data.md"
#: Each class a colour, so one epoch on a few images separates them.
COLOURS = {
    "cat": (220, 40, 40),
    "dog": (40, 200, 40),
    "bird": (40, 40, 220),
    "frog": (200, 200, 200),
}
NEW = {"fox": (230, 200, 20)}
PER_CLASS = 8


def bash_commands(markdown: str) -> list[tuple[str, str]]:
    """Commands of the page's bash and python blocks in order, with ``\\`` continuations
    joined, each with the comment line that follows it (its expected output, or '').
    A python block is one command, ``python:`` and its code, expecting what its
    ``# prints:`` comment says."""
    commands: list[tuple[str, str]] = []
    for kind, block in re.findall(r"```(bash|python)\n(.*?)```", markdown, re.S):
        if kind == "python":
            printed = re.search(r"# prints: (.*)", block)
            commands.append(("python:" + block, printed.group(1).strip() if printed else ""))
            continue
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("#") and commands:
                commands[-1] = (commands[-1][0], commands[-1][1] or stripped)
            elif stripped:
                commands.append((stripped.split("  #")[0].strip(), ""))
    return commands


def write_images(root: Path, classes: dict[str, tuple[int, int, int]]) -> int:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, colour in classes.items():
        (root / label).mkdir(parents=True)
        for i in range(1, PER_CLASS + 1):
            noise = rng.integers(-25, 25, (16, 16, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:03d}.png")
    return len(classes) * PER_CLASS


def test_the_page_has_the_steps_the_test_runs() -> None:
    commands = [c for c, _ in bash_commands(QUICKSTART.read_text())]

    assert "simstream up" in commands and "simstream doctor" in commands
    assert any(c.startswith("simstream train --dataset folder:my-images") for c in commands)
    assert sum(c.startswith("curl") for c in commands) == 3
    assert [e for c, e in bash_commands(QUICKSTART.read_text()) if c.startswith("python:")] == [
        "cat"
    ]


@pytest.mark.services
@pytest.mark.slow
def test_the_quickstart_runs_as_written_on_a_generated_image_folder(tmp_path: Path) -> None:
    settings = local_stack_settings(
        tmp_path / "var",
        metrics_port=0,
        worker_processes=1,
        retrain_schedule="",
        stack_start_timeout_s=300,
    )
    env = settings.to_env()
    api = f"127.0.0.1:{settings.api_port}"
    published = 0
    planned = {"my-images": write_images(tmp_path / "my-images", COLOURS)}
    planned["new-images"] = write_images(tmp_path / "new-images", NEW)
    stack = Child([sys.executable, "-m", "simstream.cli.main", "up"], env, tmp_path / "up.log")

    def simstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "simstream.cli.main", *args],
            cwd=tmp_path,
            env={**_base_env(), **env},
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def searchable() -> int:
        answer = simstream("stats", "--json")
        return int(json.loads(answer.stdout)["items"] or 0) if answer.returncode == 0 else -1

    try:
        for command, expected in bash_commands(QUICKSTART.read_text()):
            if command.startswith(("make ", ". ")):
                continue
            if command == "simstream up":
                stack.start()
                wait_for(lambda: searchable() >= 0, timeout_s=300, message="the API answering")
                continue
            if command.startswith("simstream publish"):
                folder = shlex.split(command)[shlex.split(command).index("--folder") + 1]
                published += planned[folder]
            if command == "simstream stats":
                wanted = published
                wait_for(
                    lambda: searchable() == wanted,  # noqa: B023 (called at once)
                    timeout_s=300,
                    message=f"{wanted} items searchable",
                )
            if command.startswith("python:"):
                code = command.removeprefix("python:").replace("localhost:8000", api)
                done = subprocess.run(
                    [sys.executable, "-c", code],
                    cwd=tmp_path,
                    env=_base_env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
                assert done.stdout.strip() == expected, (code, done.stdout)
                continue
            if command.startswith("simstream "):
                done = simstream(*shlex.split(command)[1:])
            else:
                done = subprocess.run(
                    ["bash", "-c", command.replace("localhost:8000", api)],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            label = re.search(r'"label":"(\w+)"', expected)
            if command.startswith("curl") and label:
                answer = json.loads(done.stdout)
                got = answer["label"] if "/v1/classify" in command else answer["neighbors"][0]
                got = got if isinstance(got, str) else got["label"]
                assert got == label.group(1), (command, answer)
    finally:
        stack.stop()
    assert published == sum(planned.values())


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)
