"""Supervision of the embedded stack's children: restart with backoff, or stop on the broker.

Every child but the broker is restarted when it exits, after a delay that
doubles with each exit in a row (a child that ran `RestartPolicy.stable_after_s`
starts again from the first delay). The broker is never restarted: it keeps
its log in memory, so a new one would be an empty log under the same address,
and every consumer, offset and snapshot would silently describe another log.
Its exit raises `BrokerLostError` and the stack stops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from simstream.errors import BrokerLostError, ServiceStartError
from simstream.log import get_logger
from simstream.stack.process import ChildService

log = get_logger("stack")


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart an exited child.

    Attributes:
        first_delay_s: the delay after a child's first exit in a row.
        max_delay_s: the longest delay (it doubles up to this).
        stable_after_s: a child that ran this long starts again from ``first_delay_s``.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0

    def delay(self, exits_in_a_row: int) -> float:
        """Seconds to wait before restarting after ``exits_in_a_row`` exits (1 = the first)."""
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (exits_in_a_row - 1)))


@dataclass
class Supervisor:
    """Restarts exited children with backoff; raises when the broker is lost.

    Attributes:
        log_dir: where children write their logs.
        start_timeout_s: how long a restarted child may take to become healthy.
        broker_lost: the message of the error raised when the broker exits.
        policy: the backoff.
    """

    log_dir: Path
    start_timeout_s: float
    broker_lost: str
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _due: dict[str, float] = field(default_factory=dict)
    _in_a_row: dict[str, int] = field(default_factory=dict)

    def check(self, services: list[ChildService]) -> bool:
        """Restart the exited children whose delay is over. True if one was restarted.

        Raises:
            BrokerLostError: a child that cannot be restarted (the broker) exited.
        """
        restarted = False
        for service in services:
            if service.alive():
                continue
            if not service.restartable:
                raise BrokerLostError(
                    f"The {service.name} exited with status {service.exit_status()} "
                    f"(see {service.log_path}). {self.broker_lost}"
                )
            restarted = self._restart_when_due(service, time.monotonic()) or restarted
        return restarted

    def _restart_when_due(self, service: ChildService, now: float) -> bool:
        name = service.name
        if name not in self._due:
            if now - service.started_at >= self.policy.stable_after_s:
                self._in_a_row[name] = 0
            self._in_a_row[name] = self._in_a_row.get(name, 0) + 1
            delay = self.policy.delay(self._in_a_row[name])
            self._due[name] = now + delay
            log.warning(
                "stack.service_exited",
                service=name,
                status=service.exit_status(),
                restart_in_s=delay,
                log=str(service.log_path),
            )
        if now < self._due[name]:
            return False
        try:
            service.start(self.log_dir, self.start_timeout_s, check_port=False)
        except ServiceStartError as e:
            self._in_a_row[name] += 1
            delay = self.policy.delay(self._in_a_row[name])
            self._due[name] = time.monotonic() + delay
            log.error("stack.service_restart_failed", service=name, error=str(e), retry_in_s=delay)
            return False
        del self._due[name]
        service.restarts += 1
        log.warning(
            "stack.service_restarted",
            service=name,
            restarts=service.restarts,
            pid=service.process.pid if service.process else None,
        )
        return True
