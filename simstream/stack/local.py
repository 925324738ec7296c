"""`LocalStack`: the whole embedded stack, started in order and stopped in reverse."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from simstream.errors import ServiceStartError
from simstream.kafka import ensure_topics
from simstream.log import get_logger
from simstream.settings import Settings
from simstream.stack.process import ChildService, free_port
from simstream.stack.services import broker_service, valkey_service

log = get_logger("stack")

#: Builders of simstream's own services, appended to by the modules that define them.
AppServiceBuilder = Callable[[Settings], ChildService]


def simstream_command(*args: str) -> list[str]:
    """The command line that runs a simstream CLI command in a child process."""
    return [sys.executable, "-m", "simstream.cli.main", *args]


def local_stack_settings(
    data_dir: Path,
    broker_port: int | None = None,
    valkey_port: int | None = None,
    **overrides: Any,
) -> Settings:
    """Settings of an embedded stack on this host, for tests and benchmarks.

    Args:
        data_dir: the stack's data directory (logs, models, snapshots).
        broker_port: the broker's port (default: a free one).
        valkey_port: Valkey's port (default: a free one).
        **overrides: any other settings; they win over the derived ones.

    Returns:
        Settings whose Kafka bootstrap servers, result-cache URL and Celery
        broker and backend (Valkey databases 0, 1 and 2) point at those ports.
    """
    broker = broker_port or free_port()
    valkey = valkey_port or free_port()
    derived: dict[str, Any] = {
        "data_dir": data_dir,
        "broker_port": broker,
        "valkey_port": valkey,
        "kafka_bootstrap_servers": f"127.0.0.1:{broker}",
        "redis_cache_url": f"redis://127.0.0.1:{valkey}/0",
        "celery_broker_url": f"redis://127.0.0.1:{valkey}/1",
        "celery_result_backend": f"redis://127.0.0.1:{valkey}/2",
    }
    return Settings.load(**{**derived, **overrides})


class LocalStack:
    """Broker, Valkey and (unless ``services_only``) simstream's own services.

    Use as a context manager; a failure while starting stops what was started.
    """

    def __init__(
        self,
        settings: Settings,
        services_only: bool = False,
        app_services: list[AppServiceBuilder] | None = None,
    ) -> None:
        self.settings = settings
        self.services_only = services_only
        self._app_builders = app_services or []
        self.started: list[ChildService] = []

    def start(self) -> None:
        """Start every service in order, waiting for each to be healthy.

        Raises:
            PortInUseError: a port is taken (nothing is left running).
            ServiceStartError: a service failed to start (nothing is left running).
        """
        timeout = self.settings.stack_start_timeout_s
        log_dir = self.settings.logs_dir
        try:
            for service in (broker_service(self.settings), valkey_service(self.settings)):
                service.start(log_dir, timeout)
                self.started.append(service)
            self.create_topics()
            if not self.services_only:
                for build in self._app_builders:
                    service = build(self.settings)
                    service.start(log_dir, timeout)
                    self.started.append(service)
        except BaseException:
            self.stop()
            raise

    def create_topics(self) -> None:
        """Create the items and dead-letter topics (idempotent)."""
        ensure_topics(self.settings, [self.settings.topic_items, self.settings.topic_dlq])

    def stop(self) -> None:
        """Stop every started service, newest first."""
        for service in reversed(self.started):
            service.stop()
        self.started.clear()

    def check(self) -> None:
        """Raise `ServiceStartError` when a started service has exited."""
        for service in self.started:
            if not service.alive():
                raise ServiceStartError(
                    f"{service.name} exited unexpectedly; see {service.log_path}"
                )

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
