"""CLI habits: --version, shell completion, --json that is only JSON, one-line errors
when Redis, Kafka, Celery's broker or the API cannot be reached (closed ports, real
clients), and no progress bars when output is not a terminal."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from simstream import __version__
from simstream.cli.main import app
from simstream.settings import Settings


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = invoke("--version")

    assert result.exit_code == 0
    assert result.stdout == f"simstream {__version__}\n"


@pytest.mark.parametrize(
    ("words", "expected"),
    [("simstream mod", "models"), ("simstream models li", "list"), ("simstream do", "doctor")],
)
def test_bash_completion_completes_commands_and_sub_commands(words: str, expected: str) -> None:
    env = {"_SIMSTREAM_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - 1)
    result = CliRunner().invoke(app, [], env=env, prog_name="simstream")

    assert result.exit_code == 0
    assert result.stdout.split() == [expected]


def test_help_names_the_completion_options() -> None:
    result = invoke("--help")

    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


# --- one-line errors from services -------------------------------------------------------


def _unreachable(tmp_path: Path) -> dict[str, str]:
    port = closed_port()
    return {
        "SIMSTREAM_DATA_DIR": str(tmp_path),
        "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "SIMSTREAM_CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "SIMSTREAM_CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
        "SIMSTREAM_API_PORT": str(port),
    }


@pytest.mark.parametrize(
    ("args", "service"),
    [
        (("retrain",), "the Celery broker"),
        (("dlq", "list"), "Kafka"),
        (("publish", "--delete", "x"), "Cannot create topic 'items'"),
        (("stats",), "the API"),
    ],
    ids=["celery-broker", "kafka", "kafka-admin", "api"],
)
def test_an_unreachable_service_is_one_line_on_stderr_and_exit_1(
    args: tuple[str, ...], service: str, tmp_path: Path
) -> None:
    result = invoke(*args, env=_unreachable(tmp_path))

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {service}"), lines
    assert "Traceback" not in result.output


# --- JSON output ---------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Settings:
    from tests.workers.conftest import register_encoder

    settings = Settings.load(data_dir=tmp_path)
    register_encoder(settings, "vector")
    return settings


def test_models_list_and_show_with_json_print_one_json_document_only(registry: Settings) -> None:
    env = {"SIMSTREAM_DATA_DIR": str(registry.data_dir)}
    listed = invoke("models", "list", "--json", env=env)
    shown = invoke("models", "show", "--json", env=env)

    assert listed.exit_code == shown.exit_code == 0
    versions = json.loads(listed.stdout)
    assert versions["active"] == "v1"
    assert [(v["version"], v["active"]) for v in versions["versions"]] == [("v1", True)]
    assert json.loads(shown.stdout)["version"] == "v1"
    assert len(listed.stdout.splitlines()) == len(shown.stdout.splitlines()) == 1


@pytest.mark.services
def test_retrain_local_with_json_prints_only_the_runs_record_on_stdout(
    settings: Settings,
) -> None:
    from simstream.kafka import ensure_topics

    ensure_topics(settings, [settings.topic_items])
    result = invoke("retrain", "--local", "--json", env=settings.to_env())

    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["triggered_by"] == "manual" and record["decision"]


# --- progress bars -------------------------------------------------------------------------


def test_train_draws_no_progress_bar_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    env = {"SIMSTREAM_DATA_DIR": str(tmp_path / "data")}
    result = invoke(
        "train",
        "--dataset",
        f"folder:{tmp_path / 'images'}",
        "--epochs",
        "1",
        "--validation-split",
        "0",
        "--classes-per-batch",
        "2",
        "--examples-per-class",
        "3",
        env=env,
    )

    assert result.exit_code == 0, result.output
    assert "registered v1" in result.stdout
    assert "━" not in result.output and "/step" not in result.output
