"""`simstream doctor`: check this machine before the first `make run`, and say what to fix."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from simstream.cli.common import load_settings

if TYPE_CHECKING:
    from simstream.settings import Settings

#: The oldest Python simstream supports (``requires-python`` of pyproject.toml).
MIN_PYTHON = (3, 11)
COMPILERS = ("c++", "g++", "clang++")


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, whether it passed, what was seen, how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def register(app: typer.Typer) -> None:
    """Add `doctor` to the CLI."""
    app.command("doctor")(doctor)


def doctor(
    min_free_gb: Annotated[
        float, typer.Option(min=0.0, help="Free disk the data directory needs, in GiB.")
    ] = 2.0,
) -> None:
    """Check Python, TensorFlow, hnswlib (and a C++ compiler to build it), free ports
    (broker, Valkey, API) and free disk; print what to do for each failure; exit 1 if any."""
    settings = load_settings()
    checks = run_checks(settings, min_free_gb)
    for check in checks:
        typer.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<10} {check.detail}")
        if not check.ok and check.fix:
            typer.echo(f"     {'':<10} fix: {check.fix}")
    failed = sum(not c.ok for c in checks)
    typer.echo("ready for `make run`" if not failed else f"{failed} check(s) failed")
    if failed:
        raise typer.Exit(1)


def run_checks(settings: Settings, min_free_gb: float) -> list[Check]:
    """Every check, in the order a new user meets them."""
    return [
        python_check(sys.version_info[:3]),
        package_check("tensorflow", "pip install -e . (TensorFlow 2.16 to 2.21)"),
        hnswlib_check(),
        port_check(
            "broker",
            settings.broker_port,
            "SIMSTREAM_BROKER_PORT",
            "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>",
        ),
        port_check(
            "valkey",
            settings.valkey_port,
            "SIMSTREAM_VALKEY_PORT",
            "SIMSTREAM_REDIS_CACHE_URL, SIMSTREAM_CELERY_BROKER_URL and "
            "SIMSTREAM_CELERY_RESULT_BACKEND on redis://127.0.0.1:<port>/0, /1, /2",
        ),
        port_check("api", settings.api_port, "SIMSTREAM_API_PORT"),
        disk_check(settings.data_dir, min_free_gb),
    ]


def python_check(version: tuple[int, ...]) -> Check:
    """Python is at least `MIN_PYTHON`."""
    shown = ".".join(map(str, version))
    wanted = ".".join(map(str, MIN_PYTHON))
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check("python", True, shown)
    return Check(
        "python",
        False,
        f"Expected Python >= {wanted}. Received: {shown}",
        f"install Python {wanted} or newer and run `make run PYTHON=python{wanted}`",
    )


def package_check(name: str, fix: str) -> Check:
    """``name`` is installed (found without importing it: TensorFlow takes seconds)."""
    if importlib.util.find_spec(name) is None:
        return Check(name, False, f"Expected {name} installed. Received: not importable", fix)
    return Check(name, True, importlib.metadata.version(name))


def hnswlib_check() -> Check:
    """hnswlib is installed, or a C++ compiler is there to build it."""
    installed = package_check("hnswlib", "")
    compiler = next((c for c in COMPILERS if shutil.which(c)), None)
    if installed.ok:
        return installed
    if compiler:
        return Check(
            "hnswlib",
            False,
            f"Expected hnswlib installed. Received: not importable ({compiler} found to build it)",
            "pip install -e '.[embedded]' (hnswlib is compiled on install)",
        )
    return Check(
        "hnswlib",
        False,
        "Expected hnswlib installed or a C++ compiler to build it. Received: neither "
        f"({', '.join(COMPILERS)} not on PATH)",
        "install a C++ compiler (Debian/Ubuntu: apt install build-essential python3-dev; "
        "macOS: xcode-select --install), then pip install -e '.[embedded]'",
    )


def port_check(name: str, port: int, setting: str, clients: str = "") -> Check:
    """Nothing listens on ``port`` of this machine; ``clients``: the settings that must
    follow ``setting`` when it moves."""
    label = f"{name}:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        in_use = probe.connect_ex(("127.0.0.1", port)) == 0
    if not in_use:
        return Check(label, True, "free")
    return Check(
        label,
        False,
        f"Expected port {port} free. Received: something listens on it "
        "(a running `simstream up`, or another service)",
        f"stop it (`ss -ltnp 'sport = :{port}'` shows who) or choose another port: "
        f"{setting}=<port> make run" + (f" (with {clients})" if clients else ""),
    )


def disk_check(data_dir: Path, min_free_gb: float) -> Check:
    """The data directory (or its nearest existing parent) has ``min_free_gb`` GiB free."""
    where = data_dir.resolve()
    while not where.exists():
        where = where.parent
    free_gb = shutil.disk_usage(where).free / 2**30
    detail = f"{free_gb:.1f} GiB free at {where}"
    if free_gb >= min_free_gb:
        return Check("disk", True, detail)
    return Check(
        "disk",
        False,
        f"Expected {min_free_gb:g} GiB free. Received: {detail}",
        "free space or point SIMSTREAM_DATA_DIR at a larger disk",
    )
