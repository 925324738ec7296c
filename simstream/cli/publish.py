"""`simstream publish`: publish items from a folder, a NumPy file, JSON Lines or a dataset."""

from __future__ import annotations

import sys
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from simstream.cli.common import exit_on_error, one_shot_settings

if TYPE_CHECKING:
    from producers.sources import Source
    from simstream.settings import Settings

_SHOWN_REASONS = 5


class Dataset(StrEnum):
    """Built-in datasets."""

    DIGITS = "digits"
    MNIST = "mnist"


def register(app: typer.Typer) -> None:
    """Add `publish` to the CLI."""
    app.command("publish")(publish)


def publish(
    folder: Annotated[
        Path | None,
        typer.Option(
            "--folder", help="Folder of PNG/JPEG images; label = sub-folder name.", file_okay=False
        ),
    ] = None,
    npz: Annotated[
        Path | None,
        typer.Option("--npz", help=".npz (x, optional y and ids) or .npy file.", dir_okay=False),
    ] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option("--jsonl", help="JSON Lines file, one event per line.", dir_okay=False),
    ] = None,
    dataset: Annotated[
        Dataset | None, typer.Option("--dataset", help="A built-in dataset.")
    ] = None,
    mnist_dir: Annotated[
        Path | None,
        typer.Option("--mnist-dir", help="Folder of MNIST IDX files [SIMSTREAM_MNIST_DIR]."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Publish at most N items.")
    ] = None,
    id_prefix: Annotated[
        str, typer.Option("--id-prefix", help="Prefix of every published id (deletes too).")
    ] = "",
    delete: Annotated[
        list[str] | None,
        typer.Option("--delete", help="Publish a delete of this id (repeatable), after the items."),
    ] = None,
    create_topics: Annotated[
        bool,
        typer.Option(
            "--create-topics/--no-create-topics",
            help="Create the items topic first when missing (and check its partitions).",
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for delivery at the end.")
    ] = 60.0,
) -> None:
    """Publish item events to the items topic, keyed by item id.

    Give one source (--folder, --npz, --jsonl or --dataset) and/or --delete ids.
    Bad entries are skipped and counted. Exits 1 when any event was not delivered.
    """
    sources = {"--folder": folder, "--npz": npz, "--jsonl": jsonl, "--dataset": dataset}
    chosen = [name for name, value in sources.items() if value is not None]
    if len(chosen) > 1 or (not chosen and not delete):
        typer.echo(
            "Expected one of --folder, --npz, --jsonl, --dataset, or --delete. "
            f"Received: {', '.join(chosen) or 'none'}",
            err=True,
        )
        raise typer.Exit(2)
    settings = one_shot_settings(mnist_dir=mnist_dir)
    with exit_on_error():
        source = _open_source(settings, folder, npz, jsonl, dataset)
        _publish(settings, source, limit, id_prefix, delete or [], create_topics, timeout)


def _open_source(
    settings: Settings,
    folder: Path | None,
    npz: Path | None,
    jsonl: Path | None,
    dataset: Dataset | None,
) -> Source | None:
    from producers import sources
    from simstream.errors import DatasetError

    if folder is not None:
        return sources.ImageFolderSource(folder)
    if npz is not None:
        return sources.NumpySource(npz)
    if jsonl is not None:
        return sources.JsonLinesSource(jsonl)
    if dataset is Dataset.DIGITS:
        return sources.DigitsSource()
    if dataset is Dataset.MNIST:
        if settings.mnist_dir is None:
            raise DatasetError(
                "Expected --mnist-dir or SIMSTREAM_MNIST_DIR for --dataset mnist. Received: neither"
            )
        return sources.MnistSource(settings.mnist_dir)
    return None


def _publish(
    settings: Settings,
    source: Source | None,
    limit: int | None,
    id_prefix: str,
    deletes: list[str],
    create_topics: bool,
    timeout: float,
) -> None:
    from tqdm import tqdm

    from producers.config import ProducerConfig
    from producers.producer import ItemProducer
    from simstream.errors import DeliveryError, InvalidEventError
    from simstream.kafka import ensure_topics
    from simstream.wire import ItemEvent

    if create_topics:
        ensure_topics(settings, [settings.topic_items])
    hint = source.size_hint() if source is not None else 0
    total = (min(hint, limit) if limit else hint) if hint is not None else limit
    invalid: list[str] = []
    with (
        ItemProducer(ProducerConfig.from_settings(settings), flush_timeout_s=timeout) as producer,
        tqdm(total=(total or 0) + len(deletes), unit="event", file=sys.stderr, disable=None) as bar,
    ):
        for item in islice(source or (), limit):
            try:
                producer.publish(item.to_event(id_prefix))
            except InvalidEventError as e:
                invalid.append(f"{id_prefix}{item.id}: {e}")
            except DeliveryError:
                pass  # counted as failed by the producer
            bar.update()
        for item_id in deletes:
            try:
                producer.publish(ItemEvent.delete(id_prefix + item_id))
            except InvalidEventError as e:
                invalid.append(f"delete {item_id}: {e}")
            except DeliveryError:
                pass
            bar.update()
        summary = producer.flush(timeout)
    skipped = (source.skipped.count if source is not None else 0) + len(invalid)
    reasons = [*(source.skipped.reasons if source is not None else []), *invalid]
    for reason in reasons[:_SHOWN_REASONS]:
        typer.echo(f"skipped {reason}", err=True)
    for error in summary.errors[:_SHOWN_REASONS]:
        typer.echo(f"failed {error}", err=True)
    pending = f" pending={summary.pending}" if summary.pending else ""
    typer.echo(
        f"published to {settings.topic_items}: delivered={summary.delivered} "
        f"failed={summary.failed} skipped={skipped}{pending}"
    )
    if not summary.ok:
        raise typer.Exit(1)
