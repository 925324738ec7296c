"""`simstream demo`: the main job on the embedded default, end to end, in one command."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Annotated, Any

import typer

from simstream.cli.common import exit_on_error, load_settings
from simstream.signals import stop_on_signals


def register(app: typer.Typer) -> None:
    """Add `demo` to the CLI."""
    app.command("demo")(demo)


def demo(
    items: Annotated[
        int, typer.Option(min=10, max=1797, help="Digits to publish (of the 1,797 bundled).")
    ] = 1797,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs for the first encoder.")] = 5,
    keep_running: Annotated[
        bool, typer.Option("--keep-running/--exit", help="Keep serving until Ctrl-C.")
    ] = True,
) -> None:
    """Bring the embedded stack up, train v1 on digits, publish them, and search.

    Starts the broker, Valkey, a Celery worker, beat, the dispatcher and the index
    node + API as child processes; trains and registers an encoder if none is
    active; publishes the scikit-learn digits through Kafka; waits until they are
    searchable through the API; prints a few lookups and where everything listens.
    """
    settings = load_settings()
    from model.registry import Registry
    from simstream.stack.apps import app_services
    from simstream.stack.local import LocalStack

    stop = stop_on_signals()
    stack = LocalStack(settings, app_services=app_services())
    with exit_on_error():
        stack.start()
        try:
            typer.echo(
                "embedded stack is up (development default: the broker keeps its log in memory)"
            )
            for service in stack.started:
                typer.echo(f"  {service.name:<11} {service.url}")
            registry = Registry(settings.registry_dir)
            version = registry.active() or _train(settings, epochs)
            typer.echo(f"serving model {version}")
            _publish(settings, items)
            base = f"http://{settings.api_host}:{settings.api_port}"
            _wait_searchable(base, items, stop)
            _show_lookups(base, items)
            typer.echo(f"\nsearch page: {base}/   API docs: {base}/docs")
            if keep_running:
                typer.echo("Press Ctrl-C to stop.")
                while not stop.wait(0.5):
                    stack.check()
        finally:
            stack.stop()


def _train(settings: Any, epochs: int) -> str:
    from model.datasets import load_digits
    from model.pipeline import train_evaluate_register
    from model.registry import Registry
    from model.training import TrainConfig

    typer.echo(f"training encoder v1 on digits ({epochs} epochs)…")
    trained = train_evaluate_register(
        load_digits(),
        TrainConfig(encoder="cnn", epochs=epochs, patience=epochs),
        Registry(settings.registry_dir),
        promote=True,
    )
    assert trained.version is not None
    version = trained.version.version
    typer.echo(f"registered and promoted {version}")
    return version


def _publish(settings: Any, items: int) -> None:
    from tqdm import tqdm

    from producers.config import ProducerConfig
    from producers.producer import ItemProducer
    from producers.sources import DigitsSource
    from simstream.wire import ItemEvent

    with ItemProducer(ProducerConfig.from_settings(settings)) as producer:
        for i, item in enumerate(
            tqdm(DigitsSource(), total=items, desc="publishing digits", disable=None)
        ):
            if i >= items:
                break
            producer.publish(
                ItemEvent.upsert(f"digit-{i}", item.payload, item.label, item.metadata)
            )
        summary = producer.flush(60)
    typer.echo(f"published {summary.delivered} items ({summary.failed} failed)")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_searchable(base: str, items: int, stop: threading.Event) -> None:
    from tqdm import tqdm

    with tqdm(total=items, desc="searchable", disable=None) as bar:
        while not stop.is_set():
            try:
                stats = _get(f"{base}/v1/stats")
                serving = stats.get("serving")
                live = stats["generations"][serving]["live"] if serving else 0
            except (OSError, KeyError, ValueError):
                live = 0
            bar.update(max(0, live - bar.n))
            if live >= items:
                return
            time.sleep(0.5)


def _show_lookups(base: str, items: int) -> None:
    typer.echo("\nnearest neighbours of a few digits (query label → neighbour labels):")
    hits = total = 0
    for i in range(0, items, max(1, items // 8)):
        answer = _post(f"{base}/v1/lookup", {"id": f"digit-{i}", "k": 5, "fresh": True})
        query = _get(f"{base}/v1/items/digit-{i}")
        labels = [n.get("label") for n in answer["neighbors"]]
        hits += sum(label == query.get("label") for label in labels)
        total += len(labels)
        typer.echo(f"  digit-{i:<5} {query.get('label')} → {' '.join(map(str, labels))}")
    if total:
        typer.echo(f"label agreement of the neighbours: {hits / total:.0%}")
