"""`simstream retrain`: trigger a retrain by hand, through Celery or in this process."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from simstream.cli.common import exit_on_error, load_settings


def register(app: typer.Typer) -> None:
    """Add the retrain command to the CLI."""
    app.command("retrain")(retrain)


def retrain(
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run and print its decision.")
    ] = False,
    local: Annotated[
        bool,
        typer.Option("--local", help="Run in this process instead of sending a Celery task."),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds --wait waits for the result.")
    ] = 3600.0,
    triggered_by: Annotated[
        str, typer.Option(help="Who asked, as recorded in the run (e.g. your name).")
    ] = "manual",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print only JSON on stdout: the run's record (or the task id)."
        ),
    ] = False,
) -> None:
    """Train a candidate on the labelled items and promote it if it beats the active model.

    Without --local the run is a `simstream.retrain` task on the `train` queue;
    the run's record lists the data, both models' metrics and the decision.
    """
    if "@" in triggered_by:
        raise typer.BadParameter(
            f"Expected a name without '@' (beat's period marker). Received: {triggered_by!r}",
            param_hint="--triggered-by",
        )
    settings = load_settings()
    with exit_on_error():
        if local:
            from workers.retrain import run_retrain
            from workers.retrain.config import RetrainConfig

            record = run_retrain(RetrainConfig.from_settings(settings), triggered_by=triggered_by)
            _print(record, as_json)
            return
        from workers.celery_app import RETRAIN_TASK, make_celery

        celery = make_celery(settings)
        try:
            with celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=5)  # fail fast, one line
            result = celery.send_task(RETRAIN_TASK, kwargs={"triggered_by": triggered_by})
            typer.echo(f"retrain sent: task {result.id}", err=as_json)
            if wait:
                _print(result.get(timeout=timeout, propagate=True), as_json)
            elif as_json:
                typer.echo(json.dumps({"task_id": result.id}))
        finally:
            celery.close()


def _print(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(record, default=str))
        return
    typer.echo(f"decision: {record.get('decision')} ({record.get('reason')})")
    typer.echo(json.dumps(record, indent=2, default=str))
