"""Where a benchmark's cores went: CPU time of its process tree, by role (Linux ``/proc``).

`snapshot` reads the CPU time (user + system) of a process and all its
descendants; `shares` turns two snapshots into seconds of CPU per role, a role
being the first pattern of the role table found in a process's command line
(the benchmark's own process is ``benchmark``, anything unmatched ``other``).
A process that ended between the snapshots is left out. Without ``/proc`` the
snapshots are empty and so are the shares.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """One process's command line and CPU seconds used so far."""

    command: str
    cpu_s: float


def _stat(pid: int) -> tuple[int, float] | None:
    """``(parent pid, CPU seconds)`` of ``pid``, or None when it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after the command, which may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def _command(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def snapshot(root: int) -> dict[int, ProcessCpu]:
    """CPU seconds of ``root`` and every process below it, by pid."""
    if not _PROC.is_dir():
        return {}
    stats: dict[int, tuple[int, float]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, (parent, _) in stats.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return {pid: ProcessCpu(_command(pid), stats[pid][1]) for pid in tree if pid in stats}


def shares(
    before: Mapping[int, ProcessCpu],
    after: Mapping[int, ProcessCpu],
    roles: Mapping[str, str],
    root: int,
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per role.

    Args:
        before: the first snapshot.
        after: the second.
        roles: role name → a text its processes' command lines contain (first match wins).
        root: the benchmark's own pid (role ``benchmark``).
    """
    spent: dict[str, float] = {}
    for pid, now in after.items():
        earlier = before.get(pid)
        used = now.cpu_s - (earlier.cpu_s if earlier is not None else 0.0)
        role = "benchmark" if pid == root else _role(now.command, roles)
        spent[role] = spent.get(role, 0.0) + used
    return spent


def _role(command: str, roles: Mapping[str, str]) -> str:
    for role, pattern in roles.items():
        if pattern in command:
            return role
    return "other"
