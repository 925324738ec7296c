"""simstream's own services in the embedded stack, in start order.

Each runs as a child process of ``simstream up`` with the same settings; the
processes that export metrics on ``SIMSTREAM_METRICS_PORT`` get consecutive
ports so they can share one machine.
"""

from __future__ import annotations

import urllib.request

from simstream.settings import Settings
from simstream.stack.local import AppServiceBuilder, simstream_command
from simstream.stack.process import ChildService


def _metrics_env(settings: Settings, offset: int) -> dict[str, str]:
    port = settings.metrics_port + offset if settings.metrics_port else 0
    return {"SIMSTREAM_METRICS_PORT": str(port)}


def _alive() -> bool:
    return True


def worker_service(settings: Settings) -> ChildService:
    """A Celery worker for every queue (pool solo: TensorFlow loads after start)."""
    return ChildService(
        name="worker",
        argv=simstream_command("worker", "--queues", "embed,train,default"),
        url="celery queues embed, train, default",
        healthy=_alive,
        env=_metrics_env(settings, 1),
    )


def beat_service(settings: Settings) -> ChildService:
    """Celery beat (retrain schedule; a Redis lock keeps one active)."""
    return ChildService(
        name="beat",
        argv=simstream_command("beat"),
        url=f"retrain schedule: {settings.retrain_schedule or 'off'}",
        healthy=_alive,
    )


def dispatcher_service(settings: Settings) -> ChildService:
    """The dispatcher, following the registry's active version."""
    return ChildService(
        name="dispatcher",
        argv=simstream_command("dispatcher"),
        url=f"consumer group over {settings.topic_items}",
        healthy=_alive,
        env=_metrics_env(settings, 2),
    )


def serve_service(settings: Settings) -> ChildService:
    """The index node and the lookup API."""
    base = f"http://{settings.api_host}:{settings.api_port}"
    return ChildService(
        name="api",
        argv=simstream_command("serve"),
        url=f"{base}/ (search page), {base}/docs (OpenAPI), {base}/metrics",
        healthy=lambda: _http_ok(f"{base}/healthz"),
        host=settings.api_host,
        port=settings.api_port,
    )


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:
        return bool(response.status == 200)


def app_services() -> list[AppServiceBuilder]:
    """Builders of the Celery worker and beat, the dispatcher, and the index node + API."""
    return [worker_service, beat_service, dispatcher_service, serve_service]
