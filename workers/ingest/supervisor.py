"""`DispatcherSupervisor`: one `Dispatcher` thread per model version that needs embeddings."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

from celery import Celery

from simstream.log import get_logger
from simstream.settings import Settings
from workers.cluster.membership import Membership
from workers.ingest.config import IngestConfig
from workers.ingest.dispatcher import Dispatcher

log = get_logger("dispatcher")


def active_version(registry_dir: Path) -> str | None:
    """The registry's active version, or None when no model is registered."""
    from model.registry import Registry

    return Registry(registry_dir).active()


class DispatcherSupervisor:
    """Keeps a dispatcher running for every version the registry or a live node needs,
    and no other.

    Args:
        config: the ingest config.
        membership: where the index nodes announce what they serve, build and retain.
        celery_app: makes the Celery app of each new dispatcher.
        fixed_version: dispatch for this version only.
        poll_s: how often the wanted versions are reconciled.
    """

    def __init__(
        self,
        config: IngestConfig,
        membership: Membership,
        celery_app: Callable[[], Celery],
        fixed_version: str | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.config = config
        self.membership = membership
        self.celery_app = celery_app
        self.fixed_version = fixed_version
        self.poll_s = poll_s
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, fixed_version: str | None = None, poll_s: float = 1.0
    ) -> DispatcherSupervisor:
        """A supervisor with the settings' config, the cluster's membership and Celery broker."""
        from workers.celery_app import make_celery

        return cls(
            IngestConfig.from_settings(settings),
            Membership.connect(settings.celery_broker_url, settings.topic_items),
            functools.partial(make_celery, settings),
            fixed_version=fixed_version,
            poll_s=poll_s,
        )

    def wanted(self) -> set[str]:
        """Versions to dispatch for: the fixed one, or the registry's active one and every
        version a live node serves, builds or retains (the union: nodes in different
        states never make a version's dispatcher start and stop in turn)."""
        if self.fixed_version:
            return {self.fixed_version}
        versions = self.membership.view().versions_needed()
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
            self.stop_all()

    def running(self) -> dict[str, threading.Thread]:
        """The dispatcher thread of each version dispatched for now."""
        return {version: thread for version, (thread, _) in self._threads.items()}

    def stop_all(self) -> None:
        """Stop every dispatcher cleanly."""
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
