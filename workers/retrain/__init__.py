"""Periodic retraining: replay the labelled items, train a candidate, promote it if it is better.

`run_retrain` is what the Celery task ``simstream.retrain`` calls (and
``simstream retrain --local``); `list_runs` is what the API shows. Promotion
starts the re-index: the dispatcher and the index node follow the registry's
active version (see ``docs/architecture.md``, "Retraining and re-index").

Importing this package does not import TensorFlow (beat and the API import it);
`run_retrain` loads the training code when called.
"""

from __future__ import annotations

from typing import Any

from workers.retrain.config import RetrainConfig
from workers.retrain.runs import list_runs

__all__ = ["list_runs", "run_retrain"]


def run_retrain(
    config: RetrainConfig,
    triggered_by: str = "manual",
    task_id: str | None = None,
    slot: str | None = None,
) -> dict[str, Any]:
    """Run one retrain; see `workers.retrain.run.run_retrain`."""
    from workers.retrain.run import run_retrain as run

    return run(config, triggered_by=triggered_by, task_id=task_id, slot=slot)
