"""What the benchmarks share: JSON results, latency percentiles, unit vectors, CPUs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: Path | str, data: Any) -> Path:
    """Write ``data`` as indented JSON (with a final newline), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds of durations given in seconds."""
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` scaled to unit L2 norm, as a contiguous float32 array."""
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def cpu_count() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))
