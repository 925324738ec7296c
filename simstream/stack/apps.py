"""simstream's own services in the embedded stack, in start order."""

from __future__ import annotations

from simstream.stack.local import AppServiceBuilder


def app_services() -> list[AppServiceBuilder]:
    """Builders of the Celery worker and beat, the dispatcher, and the index node + API."""
    return []
