"""What every command shares: settings loading, logging setup and error exits."""

from __future__ import annotations

import sys
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


#: librdkafka's own log level in one-shot commands: critical only. Its connection
#: errors (level 3) would print a line per retry; the command reports the failure.
ONE_SHOT_KAFKA_LOG_LEVEL = 2


def one_shot_settings(**overrides: object) -> Settings:
    """`load_settings` for a command that runs and exits (publish, dlq, topics): Kafka
    clients do not log each failed connection, so a failure is the command's one line.
    A ``log_level`` in ``SIMSTREAM_KAFKA_CLIENT_CONFIG`` wins."""
    settings = load_settings(**overrides)
    client = {"log_level": ONE_SHOT_KAFKA_LOG_LEVEL, **settings.kafka_client_config}
    return settings.model_copy(update={"kafka_client_config": client})


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


#: Where an exception comes from (the root package of its class or a base), what to
#: call it, and what to check.
SERVICES: dict[str, tuple[str, str]] = {
    "redis": ("Redis", "is it running? Check SIMSTREAM_REDIS_CACHE_URL / SIMSTREAM_CELERY_*"),
    "confluent_kafka": ("Kafka", "is the broker running? Check SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS"),
    "cimpl": ("Kafka", "is the broker running? Check SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS"),
    "kombu": ("the Celery broker", "is Redis running? Check SIMSTREAM_CELERY_BROKER_URL"),
    "celery": ("Celery", "are a worker and its broker running? Check SIMSTREAM_CELERY_*"),
    "billiard": ("Celery", "are a worker and its broker running? Check SIMSTREAM_CELERY_*"),
    "urllib": ("the API", "is `simstream serve` (or `up`) running? Check --api"),
}


def service_of(error: BaseException) -> tuple[str, str] | None:
    """The service an exception comes from and a hint, or None for anything else."""
    for cls in type(error).__mro__:
        found = SERVICES.get(cls.__module__.partition(".")[0])
        if found:
            return found
    return None


def one_line(text: str) -> str:
    """The first non-empty line of ``text`` (service errors can span many)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a `SimstreamError`, or an error of Redis, Kafka, Celery or the API, into a
    one-line message on stderr and exit status 1 (no traceback)."""
    try:
        yield
    except SimstreamError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except Exception as e:
        found = service_of(e)
        if found is None:
            raise
        name, hint = found
        detail = one_line(str(e)) or type(e).__name__
        typer.echo(f"error: {name}: {type(e).__name__}: {detail} ({hint})", err=True)
        raise typer.Exit(1) from None


def progress_wanted(quiet: bool = False) -> bool:
    """Whether to draw progress bars: never with ``quiet``, else only on a terminal."""
    return not quiet and sys.stdout.isatty() and sys.stderr.isatty()


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
