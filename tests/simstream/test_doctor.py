"""`simstream doctor`: each check passes on a ready machine and fails with what to do."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from simstream.cli import doctor
from simstream.cli.main import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def run_doctor(tmp_path: Path, *args: str, **ports: int) -> Result:
    env = {
        "SIMSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SIMSTREAM_BROKER_PORT": str(ports.get("broker", free_port())),
        "SIMSTREAM_VALKEY_PORT": str(ports.get("valkey", free_port())),
        "SIMSTREAM_API_PORT": str(ports.get("api", free_port())),
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, ["doctor", *args], env=env)


def test_a_ready_machine_passes_every_check_and_exits_0(tmp_path: Path) -> None:
    result = run_doctor(tmp_path, "--min-free-gb", "0")

    assert result.exit_code == 0, result.stdout
    names = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok")]
    assert names[:3] == ["python", "tensorflow", "hnswlib"]
    assert [n.split(":")[0] for n in names[3:]] == ["broker", "valkey", "api", "disk"]
    assert result.stdout.endswith("ready for `make run`\n")


def test_a_port_in_use_fails_and_names_the_setting_that_moves_it(
    tmp_path: Path, listening: int
) -> None:
    result = run_doctor(tmp_path, "--min-free-gb", "0", api=listening)

    assert result.exit_code == 1
    assert f"FAIL api:{listening}" in result.stdout
    assert "SIMSTREAM_API_PORT=<port> make run" in result.stdout
    assert "1 check(s) failed" in result.stdout


def test_too_little_disk_fails_and_says_where_to_point_the_data(tmp_path: Path) -> None:
    result = run_doctor(tmp_path, "--min-free-gb", "1000000")

    assert result.exit_code == 1
    assert "FAIL disk" in result.stdout and "Expected 1e+06 GiB free" in result.stdout
    assert "SIMSTREAM_DATA_DIR" in result.stdout


def test_without_hnswlib_and_a_compiler_doctor_says_to_install_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(
        doctor.importlib.util, "find_spec", lambda name: None if name == "hnswlib" else real(name)
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no c++, g++ or clang++

    check = doctor.hnswlib_check()

    assert not check.ok
    assert "Received: neither" in check.detail and "build-essential" in check.fix


def test_an_old_python_fails_naming_the_oldest_supported() -> None:
    check = doctor.python_check((3, 10, 4))

    assert not check.ok and check.detail == "Expected Python >= 3.11. Received: 3.10.4"
