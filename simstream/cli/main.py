"""Entry point of the `simstream` command.

Each command family lives in its own module and registers here. Heavy imports
(TensorFlow, hnswlib, Celery) happen inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import os

import typer

from simstream.cli import bench, demo, dlq, ingest, publish, serve, stack
from simstream.cli import model as model_cli
from simstream.cli import retrain as retrain_cli

# TensorFlow's C++ start-up chatter is not a log line of ours.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    name="simstream",
    help="Similarity search over streams of items: train encoders, keep a sharded "
    "hnswlib index fresh from Kafka, and serve lookups.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack.register(app)
publish.register(app)
model_cli.register(app)
bench.register(app)
ingest.register(app)
demo.register(app)
retrain_cli.register(app)
serve.register(app)
dlq.register(app)


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
