"""`DispatcherSupervisor`: one `Dispatcher` thread per model version that needs embeddings."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

from celery import Celery

from simstream.log import get_logger
from simstream.settings import Settings
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher
from workers.node.serving import ServingStatusBoard

log = get_logger("dispatcher")


def active_version(registry_dir: Path) -> str | None:
    """The registry's active version, or None when no model is registered."""
    from model.registry import Registry

    return Registry(registry_dir).active()


class DispatcherSupervisor:
    """Keeps a dispatcher running for every wanted or serving version, and no other.

    Args:
        config: the ingest config.
        board: where the index node publishes what it serves and builds.
        celery_app: makes the Celery app of each new dispatcher.
        fixed_version: dispatch for this version only.
        poll_s: how often the wanted versions are reconciled.
    """

    def __init__(
        self,
        config: IngestConfig,
        board: ServingStatusBoard,
        celery_app: Callable[[], Celery],
        fixed_version: str | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.config = config
        self.board = board
        self.celery_app = celery_app
        self.fixed_version = fixed_version
        self.poll_s = poll_s
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, fixed_version: str | None = None, poll_s: float = 1.0
    ) -> DispatcherSupervisor:
        """A supervisor with the settings' config, serving board and Celery broker."""
        from workers.celery_app import make_celery

        return cls(
            IngestConfig.from_settings(settings),
            ServingStatusBoard.connect(settings.celery_broker_url, settings.topic_items),
            functools.partial(make_celery, settings),
            fixed_version=fixed_version,
            poll_s=poll_s,
        )

    def wanted(self) -> set[str]:
        """Versions to dispatch for: the fixed one, or registry active ∪ node's generations."""
        if self.fixed_version:
            return {self.fixed_version}
        state = self.board.read()
        versions = set(state.building)
        if state.serving:
            versions.add(state.serving)
        active = active_version(self.config.registry_dir)
        if active:
            versions.add(active)
        return versions

    def run(self, stop: threading.Event) -> None:
        """Reconcile every ``poll_s`` until ``stop``; then stop every dispatcher cleanly."""
        try:
            while not stop.is_set():
                self.reconcile()
                stop.wait(self.poll_s)
        finally:
            for version in list(self._threads):
                self._stop(version)

    def reconcile(self) -> None:
        """Start dispatchers for new versions and stop those no longer needed."""
        wanted = self.wanted()
        for version in wanted - set(self._threads):
            stop = threading.Event()
            dispatcher = Dispatcher(self.config, version, celery_app=self.celery_app())
            thread = threading.Thread(
                target=dispatcher.run, args=(stop,), name=f"dispatch-{version}", daemon=True
            )
            thread.start()
            self._threads[version] = (thread, stop)
            log.info("dispatcher.started", model_version=version)
        for version in set(self._threads) - wanted:
            self._stop(version)
        for version, (thread, _) in list(self._threads.items()):
            if not thread.is_alive():
                log.error("dispatcher.died", model_version=version)
                del self._threads[version]

    def _stop(self, version: str) -> None:
        thread, stop = self._threads.pop(version)
        stop.set()
        thread.join(30)
        log.info("dispatcher.stopped", model_version=version)
