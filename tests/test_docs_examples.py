"""Every curl example of README.md and docs/api.md answers 2xx against `make run`'s data,
and every Python client example there runs without an error against it.

`make run` is `simstream demo`: here on free ports, with fewer digits and one epoch
(the ids it publishes, ``digit-0`` …, are the ones the examples use). The image
files the examples name (``query.png``, ``digit.png``, ``cat.png``) are bundled
digits written as PNG. A write token an example shows in its answer is replaced,
in the examples that follow, by the token the write really returned.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simstream.stack.local import local_stack_settings
from tests.processes import Child
from tests.test_quickstart import bash_commands
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/api.md")
ITEMS = 200
IMAGES = ("query.png", "digit.png", "cat.png")


#: A curl example with an elided payload (``...``) cannot run as written; this one
#: needs a vectors model, and tests/workers/api/test_own_vectors.py runs its flow.
ELIDED = ("384 numbers",)


def curl_examples() -> list[tuple[str, str, str]]:
    """(document, command, its expected-output comment) of every runnable curl example."""
    return [
        (document, command, expected)
        for document in DOCUMENTS
        for command, expected in bash_commands((REPO / document).read_text())
        if command.startswith("curl ") and not any(e in command for e in ELIDED)
    ]


def test_only_the_known_elided_curl_example_is_left_out() -> None:
    every = [
        command
        for document in DOCUMENTS
        for command, _ in bash_commands((REPO / document).read_text())
        if command.startswith("curl ")
    ]
    assert len(every) - len(curl_examples()) == len(ELIDED)
    assert all("..." not in command for _, command, _ in curl_examples())


def test_every_curl_example_is_one_complete_shell_command() -> None:
    """A quote left open across lines (no ``\\`` continuation) would run as a broken command."""
    for document, command, _ in curl_examples():
        parsed = subprocess.run(
            ["bash", "-n", "-c", command], capture_output=True, text=True, check=False
        )
        assert parsed.returncode == 0, f"{document}: {command}\n{parsed.stderr}"


def client_examples() -> list[tuple[str, str]]:
    """(document, code) of every python block that uses `simstream.client`."""
    return [
        (document, block)
        for document in DOCUMENTS
        for block in re.findall(r"```python\n(.*?)```", (REPO / document).read_text(), re.S)
        if "simstream.client" in block
    ]


def test_the_documents_have_client_examples() -> None:
    assert {d for d, _ in client_examples()} == set(DOCUMENTS)


def test_the_documents_have_curl_examples_using_make_runs_ids() -> None:
    examples = curl_examples()

    assert {d for d, _, _ in examples} >= {"docs/api.md"}
    ids = re.findall(r'"id": "(digit-[^"]+)"', " ".join(c for _, c, _ in examples))
    assert ids and all(re.fullmatch(r"digit-[1-9]\d*|digit-0", i) for i in ids), ids


def _write_images(folder: Path) -> None:
    from PIL import Image

    from model.datasets import load_digits

    digits = load_digits()
    for i, name in enumerate(IMAGES):
        Image.fromarray(digits.x[i][..., 0]).save(folder / name)


@pytest.mark.services
@pytest.mark.slow
def test_every_curl_example_answers_2xx_against_the_demos_data(tmp_path: Path) -> None:
    settings = local_stack_settings(
        tmp_path / "var", metrics_port=0, worker_processes=1, stack_start_timeout_s=300
    )
    demo = Child(
        [
            sys.executable,
            "-m",
            "simstream.cli.main",
            "demo",
            "--items",
            str(ITEMS),
            "--epochs",
            "1",
        ],
        settings.to_env(),
        tmp_path / "demo.log",
    )
    _write_images(tmp_path)
    env = {
        **os.environ,
        "API": f"http://127.0.0.1:{settings.api_port}",
        "ADMIN": "unused-auth-is-off",
    }
    tokens: dict[str, str] = {}
    demo.start()
    try:
        wait_for(
            lambda: "search page:" in demo.output(),
            timeout_s=600,
            message="the demo serving its digits",
        )
        for document, example, expected in curl_examples():
            command = example
            for shown, real in tokens.items():
                command = command.replace(shown, real)
            done = subprocess.run(
                ["bash", "-c", f"{command} -w '\\n%{{http_code}}'"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            body, _, status = done.stdout.rpartition("\n")
            assert status.startswith("2"), f"{document}: {command}\n{status} {body} {done.stderr}"
            shown_token = re.search(r'"token":"([^"]+)"', expected)
            if shown_token:
                tokens[shown_token.group(1)] = json.loads(body)["token"]
        for document, example in client_examples():
            code = example.replace("http://127.0.0.1:8000", env["API"])
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, f"{document}:\n{code}\n{done.stderr}"
    finally:
        demo.stop()
