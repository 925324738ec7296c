"""The CLI: every command and sub-command answers --help."""

from __future__ import annotations

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from simstream.cli.main import app


def _paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    commands: dict[str, object] = getattr(command, "commands", {})
    for name, sub in commands.items():
        paths.extend(_paths(sub, (*prefix, name)))
    return paths


COMMANDS = _paths(get_command(app))


def test_the_cli_has_the_stack_commands() -> None:
    assert ("up",) in COMMANDS
    assert ("topics",) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "simstream")
def test_every_command_answers_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_app_is_a_typer_app() -> None:
    assert isinstance(app, typer.Typer)
