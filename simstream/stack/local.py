"""`LocalStack`: the whole embedded stack, started in order, supervised, stopped in reverse.

While it runs, `LocalStack.check` restarts any child but the broker that exited
(with backoff, see `simstream.stack.supervision`) and stops on the broker's
exit. Its status (pid, liveness and restart count of every child) is kept in
``<data dir>/stack.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from simstream.durable import atomic_write_bytes
from simstream.kafka import ensure_topics
from simstream.log import get_logger
from simstream.settings import Settings
from simstream.stack.process import ChildService, free_port
from simstream.stack.services import broker_service, valkey_service
from simstream.stack.supervision import RestartPolicy, Supervisor

log = get_logger("stack")

#: Builders of simstream's own services, appended to by the modules that define them.
AppServiceBuilder = Callable[[Settings], ChildService]

#: What `simstream up` and its log say about the embedded broker.
MEMORY_ONLY_BROKER = (
    "The embedded broker (Tansu) keeps its log in memory only: when it stops, every "
    "topic is lost. It is a development default; durable deployments use Apache Kafka "
    "(docs/operations.md)."
)


def broker_lost_message(settings: Settings) -> str:
    """What the loss of the embedded broker means, said when it exits."""
    return (
        f"Its log was in memory only, so every topic ({settings.topic_items}, "
        f"{settings.topic_dlq}, {settings.topic_embeddings_prefix}.<version>) is lost, and "
        f"the stack was stopped. The index snapshots in {settings.snapshots_dir} describe "
        f"that lost log: a new broker starts empty, with offsets from 0 again, so they "
        f"no longer match it. Before the next `simstream up`, move {settings.snapshots_dir} "
        f"away (or use another data directory) and publish the items again. Durable "
        f"deployments use Apache Kafka (docs/operations.md)."
    )


def status_path(settings: Settings) -> Path:
    """Where a running embedded stack keeps its status (pids, restarts)."""
    return settings.data_dir / "stack.json"


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
        restart_policy: RestartPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.services_only = services_only
        self._app_builders = app_services or []
        self.started: list[ChildService] = []
        self._supervisor = Supervisor(
            settings.logs_dir,
            settings.stack_start_timeout_s,
            broker_lost_message(settings),
            restart_policy or RestartPolicy(),
        )

    def start(self) -> None:
        """Start every service in order, waiting for each to be healthy.

        Raises:
            PortInUseError: a port is taken (nothing is left running).
            ServiceStartError: a service failed to start (nothing is left running).
        """
        timeout = self.settings.stack_start_timeout_s
        log_dir = self.settings.logs_dir
        log.warning("stack.broker_memory_only", message=MEMORY_ONLY_BROKER)
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
        self.write_status()

    def create_topics(self) -> None:
        """Create the items and dead-letter topics (idempotent)."""
        ensure_topics(self.settings, [self.settings.topic_items, self.settings.topic_dlq])

    def stop(self) -> None:
        """Stop every started service, newest first."""
        for service in reversed(self.started):
            service.stop()
        self.started.clear()
        status_path(self.settings).unlink(missing_ok=True)

    def check(self) -> None:
        """Restart exited services whose backoff is over (call it every second or so).

        Raises:
            BrokerLostError: the broker exited; its in-memory log is gone.
        """
        if self._supervisor.check(self.started):
            self.write_status()

    def status(self) -> dict[str, dict[str, object]]:
        """Per started service: pid, whether it runs, restarts so far, where it listens."""
        return {
            s.name: {
                "pid": s.process.pid if s.process else None,
                "alive": s.alive(),
                "restarts": s.restarts,
                "restartable": s.restartable,
                "url": s.url,
            }
            for s in self.started
        }

    def write_status(self) -> None:
        """Write `status` to `status_path` (atomically)."""
        path = status_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(self.status(), indent=2).encode())

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
