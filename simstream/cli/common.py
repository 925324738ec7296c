"""What every command shares: settings loading, logging setup and error exits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from simstream.errors import SettingsError, SimstreamError
from simstream.log import configure_logging
from simstream.settings import Settings

MnistDirOption = Annotated[
    Path | None,
    typer.Option(help="Directory of MNIST IDX files (default: SIMSTREAM_MNIST_DIR)."),
]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with CLI overrides; exits 2 on invalid values."""
    try:
        settings = Settings.load(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


def check_topic_layout(settings: Settings, create: Iterable[str] = ()) -> None:
    """Refuse to start when ``items``, the dead-letter topic or an embeddings topic has
    another partition count than ``SIMSTREAM_PARTITIONS`` (`PartitionCountError`).

    Args:
        settings: the process's settings.
        create: topics this process produces to, created first when missing, with
            ``SIMSTREAM_PARTITIONS`` partitions: a topic auto-created by a first
            produce would get the broker's default count. An existing one is left
            alone (no Create permission needed).
    """
    from simstream.kafka import admin_client, check_partitions, ensure_topics, partition_count

    admin = admin_client(settings)
    missing = [topic for topic in create if partition_count(settings, topic, admin) == 0]
    if missing:
        ensure_topics(settings, missing, admin=admin)
    check_partitions(
        settings,
        [settings.topic_items, settings.topic_dlq],
        prefixes=[f"{settings.topic_embeddings_prefix}."],
        admin=admin,
    )


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a `SimstreamError` into a one-line message and exit status 1."""
    try:
        yield
    except SimstreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def metrics_row(name: str, metrics: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A table row: a name and its metrics (the ``all`` part of split metrics)."""
    return name, metrics.get("all", metrics)


def metrics_table(
    rows: list[tuple[str, dict[str, Any]]], ks: tuple[int, ...] | list[int] = (1, 5, 10)
) -> str:
    """Retrieval metrics as a fixed-width text table, one row per name."""
    columns = [f"recall@{k}" for k in ks] + ["map@r", "r_precision"]
    width = max([len(name) for name, _ in rows] + [8])
    lines = [f"{'':{width}} " + " ".join(f"{c:>11}" for c in columns) + f" {'queries':>8}"]
    for name, metrics in rows:
        cells = " ".join(
            f"{metrics[c]:>11.4f}" if isinstance(metrics.get(c), float) else f"{'-':>11}"
            for c in columns
        )
        lines.append(f"{name:{width}} {cells} {metrics.get('queries', ''):>8}")
    return "\n".join(lines)
