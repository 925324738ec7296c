"""`simstream up`: run the embedded stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simstream.cli.common import exit_on_error, load_settings, one_shot_settings
from simstream.signals import stop_on_signals


def register(app: typer.Typer) -> None:
    """Add `up` and `topics` to the CLI."""
    app.command("up")(up)
    app.command("topics")(topics)


def up(
    services_only: Annotated[
        bool, typer.Option("--services-only", help="Start only the broker and Valkey.")
    ] = False,
    broker_port: Annotated[
        int | None, typer.Option(help="Port of the embedded broker [SIMSTREAM_BROKER_PORT].")
    ] = None,
    valkey_port: Annotated[
        int | None, typer.Option(help="Port of embedded Valkey [SIMSTREAM_VALKEY_PORT].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [SIMSTREAM_DATA_DIR].")
    ] = None,
) -> None:
    """Run the embedded stack (development default): broker, Valkey and simstream's services.

    The embedded broker (Tansu) is memory-only: when it stops, every topic is
    lost. Durable deployments use Apache Kafka (docs/operations.md).

    A child other than the broker that exits is restarted with backoff; each
    restart is logged and counted in <data dir>/stack.json. If the broker
    exits, the stack stops and says what was lost. Each child's log is written
    under <data dir>/logs. Ctrl-C or SIGTERM stops all.
    """
    from simstream.stack.apps import app_services
    from simstream.stack.local import MEMORY_ONLY_BROKER, LocalStack, status_path

    overrides: dict[str, object] = {
        "broker_port": broker_port,
        "valkey_port": valkey_port,
        "data_dir": data_dir,
    }
    if broker_port is not None:
        overrides["kafka_bootstrap_servers"] = f"127.0.0.1:{broker_port}"
    settings = load_settings(**overrides)
    stop = stop_on_signals()
    stack = LocalStack(settings, services_only=services_only, app_services=app_services())
    with exit_on_error():
        stack.start()
        try:
            typer.echo("simstream embedded stack is up (development default, not production):")
            for service in stack.started:
                typer.echo(f"  {service.name:<11} {service.url}")
            typer.echo(f"  logs        {settings.logs_dir.resolve()}")
            typer.echo(f"  status      {status_path(settings).resolve()}")
            typer.echo(MEMORY_ONLY_BROKER)
            typer.echo("Press Ctrl-C to stop.")
            while not stop.wait(0.5):
                stack.check()
        finally:
            stack.stop()
            typer.echo("stopped")


def topics(
    partitions: Annotated[
        int | None, typer.Option(help="Partitions per topic [SIMSTREAM_PARTITIONS].")
    ] = None,
) -> None:
    """Create the items and dead-letter topics if they do not exist (idempotent)."""
    from simstream.kafka import ensure_topics

    settings = one_shot_settings(partitions=partitions)
    with exit_on_error():
        ensure_topics(settings, [settings.topic_items, settings.topic_dlq])
    typer.echo(f"topics ready: {settings.topic_items}, {settings.topic_dlq}")
