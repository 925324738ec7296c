"""What every command shares: settings loading, logging setup and error exits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from simstream.errors import SettingsError, SimstreamError
from simstream.log import configure_logging
from simstream.settings import Settings


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
