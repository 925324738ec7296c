"""`simstream stats`: what the lookup API says about its index, lag and cache."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer

from simstream.cli.common import exit_on_error, load_settings
from simstream.errors import ServiceError


def register(app: typer.Typer) -> None:
    """Add `stats` to the CLI."""
    app.command("stats")(stats)


def stats(
    api: Annotated[
        str | None,
        typer.Option(help="Base URL of the API (default: http://SIMSTREAM_API_HOST:API_PORT)."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="A read token, when the API requires one.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's answer as JSON, nothing else.")
    ] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the API.")] = 10.0,
) -> None:
    """Print the serving model, items, lag, freshness and cache of a running index node."""
    settings = load_settings()
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    base = (api or f"http://{host}:{settings.api_port}").rstrip("/")
    with exit_on_error():
        answer = fetch_json(f"{base}/v1/stats", token, timeout)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    typer.echo(summary(answer))


def fetch_json(url: str, token: str | None, timeout: float) -> Any:
    """GET ``url`` and parse its JSON body; an HTTP error names its status and detail."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        raise ServiceError(
            f"The API answered {e.code} to GET {url}. Expected 200. Received: {body[:300]}"
        ) from None


def summary(answer: dict[str, Any]) -> str:
    """A few lines for humans: serving version, items, lag, freshness, cache."""
    freshness = answer.get("freshness") or {}
    cache = answer.get("cache") or {}
    lines = [
        f"serving   {answer.get('serving') or '-'} (wanted {answer.get('wanted') or '-'})"
        + (" DEGRADED" if answer.get("degraded") else ""),
        f"items     {answer.get('items')}",
        f"lag       {answer.get('lag_records')} records, "
        f"{answer.get('source_lag_events')} events of items",
        f"freshness {json.dumps(freshness, sort_keys=True)}",
        f"cache     {json.dumps(cache, sort_keys=True)}",
    ]
    for version, generation in sorted((answer.get("generations") or {}).items()):
        lines.append(
            f"  {version:<6} live={generation.get('live')} "
            f"lag={generation.get('lag_records')} epoch={generation.get('epoch')}"
        )
    return "\n".join(lines)
