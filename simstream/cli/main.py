"""Entry point of the `simstream` command.

Each command family lives in its own module and registers here. Heavy imports
(TensorFlow, hnswlib, Celery) happen inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from simstream import __version__
from simstream.cli import bench, demo, dlq, doctor, ingest, publish, router, serve, stack, stats
from simstream.cli import model as model_cli
from simstream.cli import retrain as retrain_cli

# TensorFlow's C++ start-up chatter is not a log line of ours.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    name="simstream",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"simstream {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Similarity search over streams of items: train encoders, keep a sharded hnswlib
    index fresh from Kafka, and serve lookups.

    Shell completion: `simstream --install-completion` (bash, zsh, fish, PowerShell),
    or `simstream --show-completion` to print the script.
    """


stack.register(app)
publish.register(app)
model_cli.register(app)
bench.register(app)
ingest.register(app)
demo.register(app)
retrain_cli.register(app)
serve.register(app)
router.register(app)
dlq.register(app)
stats.register(app)
doctor.register(app)


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
