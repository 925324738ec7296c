"""Child processes of the embedded stack: start, wait until healthy, stop, never orphan."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from simstream.errors import PortInUseError, ServiceStartError
from simstream.log import get_logger

log = get_logger("stack")

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) ``host:port``.

    Connections of a stopped run that linger in TIME_WAIT do not count (the
    broker and Valkey bind with ``SO_REUSEADDR`` too), so a second `make run`
    right after the first starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for tests and ad-hoc stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ChildService:
    """One child process with a health check.

    Attributes:
        name: short name used in logs and file names.
        argv: the command line.
        url: where it listens, for humans.
        healthy: returns True once the service answers.
        host: host whose port must be free before starting (None: no port).
        port: the port it will listen on (None: no port).
        env: extra environment variables.
        restartable: whether the stack restarts it when it exits (not the broker,
            whose log dies with it).
        restarts: how often the stack restarted it.
    """

    name: str
    argv: Sequence[str]
    url: str
    healthy: Callable[[], bool]
    host: str | None = None
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    restartable: bool = True
    restarts: int = 0
    started_at: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log_file: IO[bytes] | None = None

    def start(self, log_dir: Path, timeout_s: float, check_port: bool = True) -> None:
        """Start the process, writing its output to ``log_dir/<name>.log``; wait until healthy.

        Args:
            log_dir: where its log goes (appended to).
            timeout_s: how long it may take to become healthy.
            check_port: refuse a taken port first (a restart skips this: the port
                was its own, and may linger in TIME_WAIT).

        Raises:
            PortInUseError: the port is already taken.
            ServiceStartError: it exited early or was not healthy within ``timeout_s``.
        """
        if (
            check_port
            and self.port is not None
            and port_in_use(self.host or "127.0.0.1", self.port)
        ):
            raise PortInUseError(self.name, self.host or "127.0.0.1", self.port)
        if self._log_file is not None:
            self._log_file.close()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(self.argv),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            # prctl must run in the child; it calls no Python locks, so it is fork-safe.
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        self.started_at = time.monotonic()
        log.info("stack.service_starting", service=self.name, pid=self.process.pid, url=self.url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServiceStartError(
                    f"{self.name} exited with status {code} while starting; see {self.log_path}"
                )
            if self._probe():
                log.info("stack.service_healthy", service=self.name, url=self.url)
                return
            time.sleep(0.1)
        self.stop()
        raise ServiceStartError(
            f"{self.name} was not healthy within {timeout_s:.0f} s; see {self.log_path}"
        )

    def _probe(self) -> bool:
        try:
            return self.healthy()
        except Exception:
            return False

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    def exit_status(self) -> int | None:
        """Its exit status (negative: the signal that killed it); None while it runs."""
        return self.process.poll() if self.process is not None else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            log.info("stack.service_stopped", service=self.name)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def tcp_open(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
