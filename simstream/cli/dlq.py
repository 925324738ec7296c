"""`simstream dlq list|count|show|replay`: read the dead-letter topic and replay what it names.

Each lists a source position once, however many records a re-run wrote for it.

Replay re-embeds the dead-lettered source offsets (never re-publishes), so
replaying twice changes nothing in the index; see `workers.ingest.dlq`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from simstream.cli.common import exit_on_error, one_shot_settings

if TYPE_CHECKING:
    from pathlib import Path

    from simstream.settings import Settings
    from workers.ingest.dlq import DlqEntry, DlqFilter, SourceRange

dlq_app = typer.Typer(
    help="List, show and replay dead letters (events and embed ranges that failed).",
    no_args_is_help=True,
)

ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Only this reason code (e.g. range_failed).")
]
PartitionOption = Annotated[
    int | None, typer.Option("--partition", min=0, help="Only this source partition.")
]
FromOption = Annotated[
    int | None,
    typer.Option("--from-offset", min=0, help="Only letters covering source offsets >= this."),
]
ToOption = Annotated[
    int | None,
    typer.Option("--to-offset", min=0, help="Only letters covering source offsets <= this."),
]


def register(app: typer.Typer) -> None:
    """Add the dlq commands to the CLI."""
    app.add_typer(dlq_app, name="dlq")


def _filter(
    reason: str | None, partition: int | None, from_offset: int | None, to_offset: int | None
) -> DlqFilter:
    from workers.ingest.dlq import DlqFilter

    return DlqFilter(reason, partition, from_offset, to_offset)


def _row(entry: DlqEntry) -> str:
    covered = f"{entry.start}..{entry.end - 1}" if entry.end is not None else f"{entry.start}..?"
    letter = entry.letter
    return (
        f"{entry.id:<14} p{letter.partition:<3} {covered:<15} {letter.reason:<18} {letter.detail}"
    )


@dlq_app.command("list")
def list_letters(
    reason: ReasonOption = None,
    partition: PartitionOption = None,
    from_offset: FromOption = None,
    to_offset: ToOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Most letters to print.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Start at this id (the 'next:' line of a previous page).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters: id, source partition, source offsets, reason, detail."""
    from workers.ingest.config import IngestConfig
    from workers.ingest.dlq import DeadLetterReader

    settings = one_shot_settings()
    with exit_on_error(), DeadLetterReader(IngestConfig.from_settings(settings)) as reader:
        page = reader.page(_filter(reason, partition, from_offset, to_offset), cursor, limit)
    for entry in page.entries:
        typer.echo(json.dumps(entry.to_dict()) if as_json else _row(entry))
    if not as_json:
        typer.echo(f"{len(page.entries)} dead letter(s) in {settings.topic_dlq}")
        if page.next_cursor:
            typer.echo(f"next: --cursor {page.next_cursor}")


@dlq_app.command("count")
def count(
    reason: ReasonOption = None,
    partition: PartitionOption = None,
    from_offset: FromOption = None,
    to_offset: ToOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Count dead letters (each source position once), per reason, and their records."""
    from workers.ingest.config import IngestConfig
    from workers.ingest.dlq import DeadLetterReader

    settings = one_shot_settings()
    with exit_on_error(), DeadLetterReader(IngestConfig.from_settings(settings)) as reader:
        counted = reader.count(_filter(reason, partition, from_offset, to_offset))
    if as_json:
        typer.echo(json.dumps(asdict(counted)))
        return
    for name, n in sorted(counted.by_reason.items()):
        typer.echo(f"{name:<18} {n}")
    typer.echo(
        f"{counted.letters} dead letter(s) in {settings.topic_dlq} ({counted.records} record(s))"
    )


@dlq_app.command("show")
def show(
    letter_id: Annotated[
        str, typer.Argument(help="An id printed by list: p<partition>.o<offset>.")
    ],
    raw_bytes: Annotated[int, typer.Option(min=0, help="Raw bytes to print (hex).")] = 256,
) -> None:
    """Print one dead letter as JSON, with the first bytes of what failed."""
    from workers.ingest.config import IngestConfig
    from workers.ingest.dlq import DeadLetterReader

    settings = one_shot_settings()
    with exit_on_error(), DeadLetterReader(IngestConfig.from_settings(settings)) as reader:
        entry = reader.get(letter_id)
    typer.echo(json.dumps(entry.to_dict(raw_prefix_bytes=raw_bytes), indent=2))


@dlq_app.command("replay")
def replay(
    reason: ReasonOption = None,
    partition: PartitionOption = None,
    from_offset: FromOption = None,
    to_offset: ToOption = None,
    letter_ids: Annotated[
        list[str] | None, typer.Option("--id", help="Only this letter (repeatable).")
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(help="Embed for this model version (default: the registry's active one)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the ranges, send nothing.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the embed tasks and print their counts.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds --wait waits.")] = 600.0,
) -> None:
    """Embed the selected dead-lettered events and ranges again, for one model version.

    The embed tasks read the original source offsets again, so the index applies
    the result by last-writer-wins: replaying twice changes nothing, and a newer
    event of the same item still wins. An event that is still invalid is
    dead-lettered again. Fix the cause first (register the missing model, raise
    a payload limit), then replay.
    """
    from workers.ingest.config import IngestConfig
    from workers.ingest.dlq import DeadLetterReader, plan_replay

    settings = one_shot_settings()
    config = IngestConfig.from_settings(settings)
    selected = _filter(reason, partition, from_offset, to_offset)
    with exit_on_error():
        with DeadLetterReader(config) as reader:
            if letter_ids:
                entries = [reader.get(i) for i in letter_ids]
                entries = [e for e in entries if selected.matches(e)]
            else:
                entries = list(reader.scan(selected))
        plan = plan_replay(entries, settings.topic_items, settings.dispatch_max_items)
        for entry in plan.skipped:
            typer.echo(f"skipped {entry.id}: not a replayable range of {settings.topic_items}")
        version = model_version or _active_version(settings.registry_dir)
        for r in plan.ranges:
            typer.echo(f"replay p{r.partition} offsets {r.start}..{r.end - 1} with {version}")
        typer.echo(f"{len(entries)} dead letter(s), {len(plan.ranges)} range(s) to embed again")
        if dry_run or not plan.ranges:
            return
        _send(settings, plan.ranges, version, wait, timeout)


def _active_version(registry_dir: Path) -> str:
    from model.registry import Registry
    from simstream.errors import RegistryError

    version = Registry(registry_dir).active()
    if not version:
        raise RegistryError(
            f"No model version to replay for. Expected --model-version or an active "
            f"version in {registry_dir}. Received: none"
        )
    return version


def _send(
    settings: Settings, ranges: list[SourceRange], version: str, wait: bool, timeout: float
) -> None:
    from workers.celery_app import make_celery
    from workers.ingest.dlq import send_replay

    celery = make_celery(settings)
    try:
        results = send_replay(celery, settings.topic_items, ranges, version)
        typer.echo(f"sent {len(results)} embed task(s)")
        if wait:
            for result in results:
                typer.echo(json.dumps(result.get(timeout=timeout, propagate=True)))
    finally:
        celery.close()
