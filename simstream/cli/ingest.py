"""`simstream worker`, `simstream beat` and `simstream dispatcher`: the ingest processes."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from simstream.cli.common import exit_on_error, load_settings
from simstream.settings import Settings


def register(app: typer.Typer) -> None:
    """Add the ingest commands to the CLI."""
    app.command("worker")(worker)
    app.command("beat")(beat)
    app.command("dispatcher")(dispatcher)


def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated Celery queues: embed, train, default.")
    ] = "embed,train,default",
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes or threads.")] = 1,
    pool: Annotated[
        str, typer.Option(help="Celery pool: solo (one process per GPU) or prefork.")
    ] = "solo",
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery worker (GPU embed worker, trainer, or both).

    The encoder is loaded on the first task, never before fork. Prometheus metrics
    are served on SIMSTREAM_METRICS_PORT.
    """
    settings = load_settings()
    from workers.metrics import serve_metrics
    from workers.tasks import app as celery_app

    serve_metrics(settings.metrics_port)
    if pool == "solo":
        _preload(settings)
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv=argv)


def _preload(settings: Settings) -> None:
    """Load and warm the active encoder before taking tasks (solo pool only: no fork follows)."""
    from model.registry import Registry
    from simstream.errors import SimstreamError
    from workers.tasks import embedder_for

    try:
        version = Registry(settings.registry_dir).active()
        if version:
            embedder_for(version)
    except SimstreamError as e:
        typer.echo(f"warning: encoder not preloaded: {e}", err=True)


def beat() -> None:
    """Run Celery beat: schedules `retrain` (SIMSTREAM_RETRAIN_SCHEDULE); one active at a time."""
    settings = load_settings()
    from workers.schedule import run_beat

    with exit_on_error():
        run_beat(settings)


def dispatcher(
    model_version: Annotated[
        str | None,
        typer.Option(help="Dispatch for this version only (default: follow the registry)."),
    ] = None,
) -> None:
    """Run the dispatcher: cut `items` into offset ranges and send embed tasks.

    By default it follows the model registry and the index node: it dispatches for
    the active version and, during a re-index, for the version still serving.
    """
    settings = load_settings()
    from workers.ingest.supervisor import DispatcherSupervisor
    from workers.metrics import serve_metrics

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve_metrics(settings.metrics_port)
    with exit_on_error():
        DispatcherSupervisor(settings, fixed_version=model_version).run(stop)
