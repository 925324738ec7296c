"""`simstream bench ingest` and `simstream bench all`: benchmarks beyond the model's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from simstream.cli.common import exit_on_error, load_settings


def register(bench_app: typer.Typer) -> None:
    """Add the ingest benchmark to the ``bench`` group."""
    bench_app.command("ingest")(ingest)


def ingest(
    out: Annotated[Path, typer.Option(help="Where to write the JSON figures.")] = Path(
        "docs/bench/ingest.json"
    ),
    items: Annotated[int, typer.Option(min=100, help="Items published end to end.")] = 20000,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions = shards.")] = 4,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the encoder trained first.")] = 2,
    freshness_seconds: Annotated[
        float, typer.Option(help="Seconds of publishing at half rate for freshness.")
    ] = 10.0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep the stack's data and logs here.")
    ] = None,
) -> None:
    """End-to-end ingest (publish → searchable) vs the encoder and hnswlib limits, one run.

    Starts its own embedded broker and Valkey on free ports, a Celery worker, the
    dispatcher and the index node; writes throughput, the limits, efficiency and
    freshness p50/p99 as JSON.
    """
    load_settings()
    from workers.ingest.benchmark import run

    with exit_on_error():
        result = run(out, items, partitions, epochs, freshness_seconds, work_dir)
    typer.echo(json.dumps(result, indent=2))
