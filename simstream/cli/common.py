"""What every command shares: settings loading, logging setup and error exits."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer

from simstream.errors import SettingsError, SimstreamError
from simstream.log import configure_logging
from simstream.settings import Settings

T = TypeVar("T")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with CLI overrides; exits 2 on invalid values."""
    try:
        settings = Settings.load(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a `SimstreamError` into a one-line message and exit status 1."""
    try:
        yield
    except SimstreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def run_or_exit(fn: Callable[[], T]) -> T:
    """Call ``fn`` and exit with status 1 and its message on a `SimstreamError`."""
    with exit_on_error():
        return fn()
    sys.exit(1)  # pragma: no cover - unreachable, for the type checker
