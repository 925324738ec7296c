"""The CLI: README's command table is true, --help answers, bad input exits non-zero and says why.

No services: every command here fails or finishes before it would connect.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from simstream.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"

#: A wide terminal, so that help and error boxes never wrap an option's name.
WIDE = {"COLUMNS": "200"}


def _paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    commands: dict[str, object] = getattr(command, "commands", {})
    for name, sub in commands.items():
        paths.extend(_paths(sub, (*prefix, name)))
    return paths


COMMANDS = _paths(get_command(app))


def readme_commands(text: str) -> dict[tuple[str, ...], set[str]]:
    """Per command path of README's command table, the options its row names.

    A row's first cell holds spans like ``simstream models list|show`` or
    ``simstream worker`` / ``beat``: a command, its sub-commands after it, and
    sibling commands in the spans that follow.
    """
    commands: dict[tuple[str, ...], set[str]] = {}
    for row in text.splitlines():
        if not row.startswith("| `simstream "):
            continue
        cell = re.split(r"(?<!\\)\|", row)[1]
        first, *siblings = re.findall(r"`([^`]*)`", cell)
        words = first.replace("\\|", "|").split()[1:]
        options = set(re.findall(r"--[a-z][a-z-]*", first))
        names = [words[0], *(s.strip() for s in siblings)]
        subs = words[1].split("|") if len(words) > 1 and words[1][0].isalpha() else []
        for name in names:
            commands[(name,)] = options if name == words[0] else set()
            commands.update({(name, sub): set() for sub in subs})
    return commands


README_COMMANDS = readme_commands(README.read_text())


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``simstream ARGS`` in this process on a wide terminal."""
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


def test_the_readme_table_is_parsed_into_the_commands_it_lists() -> None:
    assert README_COMMANDS[("up",)] == {"--services-only"}
    assert README_COMMANDS[("publish",)] >= {"--folder", "--npz", "--jsonl", "--dataset"}
    assert ("models", "rollback") in README_COMMANDS
    assert ("beat",) in README_COMMANDS and ("evaluate",) in README_COMMANDS


def test_the_readme_table_lists_exactly_the_top_level_commands() -> None:
    top_level = {path[0] for path in COMMANDS if len(path) == 1}
    assert {path[0] for path in README_COMMANDS} == top_level


@pytest.mark.parametrize("path", sorted(README_COMMANDS), ids=" ".join)
def test_every_command_of_the_readme_exists_and_its_help_names_its_options(
    path: tuple[str, ...],
) -> None:
    assert path in COMMANDS, f"`simstream {' '.join(path)}` is in README but not in the CLI"
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: simstream {' '.join(path)}" in result.output
    missing = {option for option in README_COMMANDS[path] if option not in result.output}
    assert not missing, f"--help of {path} does not name {missing}"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "simstream")
def test_every_command_answers_help_with_its_usage_and_its_sub_commands(
    path: tuple[str, ...],
) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: {' '.join(('simstream', *path))}" in result.output
    subs = [p[-1] for p in COMMANDS if len(p) == len(path) + 1 and p[: len(path)] == path]
    assert all(sub in result.output for sub in subs), (subs, result.output)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["worker", "--pool", "bogus"], "--pool"),
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["publish", "--dataset", "cifar"], "--dataset"),
        (["publish", "--dataset", "digits", "--limit", "0"], "--limit"),
        (["up", "--broker-port", "nine"], "--broker-port"),
        (["demo", "--items", "5"], "--items"),
        (["train", "--embedding-dim", "0"], "--embedding-dim"),
        (["retrain", "--timeout", "0"], "--timeout"),
        (["bench", "index", "--queries", "1"], "--queries"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_option_value_exits_2_with_a_message_naming_the_option(
    args: list[str], option: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and option in result.output, result.output


def test_publish_needs_exactly_one_source_and_says_which_it_received() -> None:
    two = invoke("publish", "--npz", "a.npz", "--jsonl", "b.jsonl")
    assert two.exit_code == 2
    assert "Expected one of --folder, --npz, --jsonl, --dataset, or --delete" in two.output
    assert "Received: --npz, --jsonl" in two.output
    none = invoke("publish")
    assert none.exit_code == 2 and "Received: none" in none.output


def test_an_unknown_command_exits_2_naming_it() -> None:
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


def test_an_invalid_setting_exits_2_naming_the_variable_and_the_value(tmp_path: Path) -> None:
    result = invoke(
        "models", "list", env={"SIMSTREAM_DATA_DIR": str(tmp_path), "SIMSTREAM_PARTITIONS": "0"}
    )
    assert result.exit_code == 2
    assert "SIMSTREAM_PARTITIONS" in result.output and "0" in result.output


def test_models_list_on_an_empty_registry_says_so_and_exits_0(tmp_path: Path) -> None:
    result = invoke("models", "list", env={"SIMSTREAM_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"no model registered in {tmp_path / 'models'}"


def test_models_show_and_rollback_on_an_empty_registry_exit_1_with_one_line(
    tmp_path: Path,
) -> None:
    for args in (["models", "show"], ["models", "rollback"], ["models", "promote", "v1"]):
        result = invoke(*args, env={"SIMSTREAM_DATA_DIR": str(tmp_path)})
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)


def _exposed(tmp_path: Path, **env: str) -> dict[str, str]:
    """A production node bound to every interface; Kafka on a closed port (never reached)."""
    from simstream.stack.process import free_port

    return {
        "SIMSTREAM_DATA_DIR": str(tmp_path),
        "SIMSTREAM_ENVIRONMENT": "production",
        "SIMSTREAM_API_HOST": "0.0.0.0",
        "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        **env,
    }


def test_serve_in_production_on_all_interfaces_without_tokens_exits_1_naming_the_settings(
    tmp_path: Path,
) -> None:
    result = invoke("serve", env=_exposed(tmp_path))

    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: Refusing to serve the API on 0.0.0.0"), line
    for setting in (
        "SIMSTREAM_API_READ_TOKENS_FILE",
        "SIMSTREAM_API_ADMIN_TOKENS_FILE",
        "SIMSTREAM_API_READ_TOKENS",
        "SIMSTREAM_API_ADMIN_TOKENS",
    ):
        assert setting in line
    assert line.endswith("Received: none")


def test_serve_in_production_with_an_empty_or_missing_token_file_exits_1_saying_so(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "read-tokens"
    empty.write_text("# rotated out\n\n")
    missing = tmp_path / "admin-tokens"

    only_empty = invoke("serve", env=_exposed(tmp_path, SIMSTREAM_API_READ_TOKENS_FILE=str(empty)))
    with_missing = invoke(
        "serve",
        env=_exposed(
            tmp_path,
            SIMSTREAM_API_READ_TOKENS_FILE=str(empty),
            SIMSTREAM_API_ADMIN_TOKENS_FILE=str(missing),
        ),
    )

    assert only_empty.exit_code == with_missing.exit_code == 1
    assert only_empty.output.strip().endswith(
        f"Received: no token (the token files {empty} are empty)"
    )
    [line] = with_missing.output.strip().splitlines()
    assert line.startswith("error: Cannot read SIMSTREAM_API_ADMIN_TOKENS_FILE."), line
    assert str(missing) in line and "FileNotFoundError" in line
