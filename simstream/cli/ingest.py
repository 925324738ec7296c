"""`simstream worker`, `simstream beat` and `simstream dispatcher`: the ingest processes."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Annotated

import typer

from simstream.cli.common import check_topic_layout, exit_on_error, load_settings
from simstream.signals import stop_on_signals


def register(app: typer.Typer) -> None:
    """Add the ingest commands to the CLI."""
    app.command("worker")(worker)
    app.command("beat")(beat)
    app.command("dispatcher")(dispatcher)


def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated Celery queues: embed, train, default.")
    ] = "embed,train,default",
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Encoder processes (default SIMSTREAM_WORKER_PROCESSES: 1 on a GPU, "
            "else one per CPU core).",
        ),
    ] = None,
    pool: Annotated[
        str,
        typer.Option(
            help="Celery pool: auto (solo for one process, else prefork), solo or prefork."
        ),
    ] = "auto",
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery worker (embed worker, trainer, or both).

    Every process loads and warms the active encoder before its first task: a solo
    worker at start, a prefork child right after its fork (the parent never loads
    TensorFlow). On CPUs each encoder gets cores / processes threads
    (SIMSTREAM_ENCODER_THREADS). Prometheus metrics of every process are served
    together on SIMSTREAM_METRICS_PORT.
    """
    if pool not in ("auto", "solo", "prefork"):
        raise typer.BadParameter(
            f"Expected auto, solo or prefork. Received: {pool!r}", param_hint="--pool"
        )
    settings = load_settings()
    if settings.metrics_port:
        multiprocess_metrics(
            settings.data_dir / "metrics" / f"worker-{socket.gethostname()}-{settings.metrics_port}"
        )
    with exit_on_error():
        check_topic_layout(settings, create=[settings.topic_dlq])
    from workers.ingest.config import IngestConfig
    from workers.ingest.device import worker_layout
    from workers.metrics import serve_metrics
    from workers.tasks import configure, preload_active

    layout = worker_layout(
        IngestConfig.from_settings(settings), 1 if pool == "solo" else concurrency
    )
    pool = layout.pool if pool == "auto" else pool
    celery_app = configure(settings.model_copy(update={"encoder_threads": layout.encoder_threads}))
    serve_metrics(settings.metrics_port)
    if pool == "solo":
        preload_active()
    else:
        celery_app.conf.simstream_preload = True
    typer.echo(
        f"worker: pool {pool}, {layout.processes} encoder process(es), "
        f"{layout.encoder_threads} CPU thread(s) each",
        err=True,
    )
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={layout.processes}",
        f"--pool={pool}",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv=argv)


def multiprocess_metrics(directory: Path) -> None:
    """Make every process of this worker write its metrics into ``directory``, emptied first.

    Prometheus' multiprocess mode: the children a prefork pool forks inherit
    ``PROMETHEUS_MULTIPROC_DIR`` and write one file each; the parent's metrics
    endpoint sums them. It must be set before ``prometheus_client`` is imported,
    so this runs before anything of ``workers``; files of an earlier run (their
    processes are gone) are removed.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def beat() -> None:
    """Run Celery beat: schedules `retrain` (SIMSTREAM_RETRAIN_SCHEDULE); one active at a time."""
    settings = load_settings()
    from workers.celery_app import make_celery
    from workers.retrain.config import RetrainConfig
    from workers.retrain.schedule import run_beat

    with exit_on_error():
        run_beat(RetrainConfig.from_settings(settings), make_celery(settings))


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

    with exit_on_error():
        check_topic_layout(settings, create=[settings.topic_dlq])
    stop = stop_on_signals()
    serve_metrics(settings.metrics_port)
    with exit_on_error():
        DispatcherSupervisor.from_settings(settings, fixed_version=model_version).run(stop)
