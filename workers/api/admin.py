"""Operational routes: ``GET /v1/stats``, ``GET /v1/models`` (read scope),
``POST /v1/admin/retrain``, ``GET /v1/admin/runs``, ``GET /v1/admin/dead-letters`` and
``GET /v1/admin/dead-letters/count`` (admin scope)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Depends, Query

from simstream.errors import KafkaError, RegistryError, RequestError
from simstream.log import get_logger
from workers.api.auth import admin_scope, read_scope
from workers.api.lookup import ERRORS
from workers.api.schemas import (
    DeadLetterCount,
    DeadLetters,
    ModelsResponse,
    RetrainAccepted,
    RetrainRuns,
    StatsResponse,
)
from workers.api.state import ApiState, get_state

if TYPE_CHECKING:
    from workers.ingest.dlq import DeadLetterReader, DlqFilter

T = TypeVar("T")
router = APIRouter(prefix="/v1", tags=["operations"])
log = get_logger("api.admin")


@router.get(
    "/stats",
    response_model=StatsResponse,
    responses=ERRORS,
    dependencies=[read_scope],
    summary="Index, lag, freshness and cache statistics",
)
def stats(state: ApiState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Shards with live and tombstone counts, lag, freshness, snapshot ages, models, cache.

    Top-level numbers describe the serving generation; `generations` holds every
    generation of the node (the serving one, one being built during a
    re-index, and one kept for rollback).
    """
    node_stats = state.node.stats()
    serving = node_stats["serving"]
    current = node_stats["generations"].get(serving, {}) if serving else {}
    return {
        "serving": serving,
        "wanted": node_stats["wanted"],
        "items": current.get("live"),
        "index_epoch": current.get("epoch"),
        "lag_records": current.get("lag_records"),
        "source_lag_events": current.get("source_lag_events"),
        "degraded": node_stats["degraded"],
        "freshness": current.get("freshness"),
        "snapshot_age_s": current.get("snapshot_age_s"),
        "generations": node_stats["generations"],
        "flipped_at": node_stats["flipped_at"],
        "reindex": node_stats.get("reindex"),
        "cache": state.cache.stats(),
    }


@router.get(
    "/models",
    response_model=ModelsResponse,
    responses=ERRORS,
    dependencies=[read_scope],
    summary="Registered model versions",
)
def models(state: ApiState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Every registered version with its metrics, the active and serving ones, the history."""
    registry = state.node.registry
    try:
        versions = registry.list()
        active, history = registry.active(), registry.history()
    except RegistryError as e:
        raise RequestError(f"The model registry cannot be read: {e}", 503) from None
    serving = state.node.serving
    return {
        "active": active,
        "serving": serving.version if serving is not None else None,
        "versions": [
            {
                "version": v.version,
                "created_at": v.created_at,
                "embedding_dim": v.config.get("embedding_dim"),
                "distance": v.config.get("distance"),
                "input_spec": v.config.get("input_spec"),
                "metrics": v.metrics,
            }
            for v in versions
        ],
        "history": history,
    }


@router.post(
    "/admin/retrain",
    status_code=202,
    response_model=RetrainAccepted,
    responses={**ERRORS, 403: ERRORS[401] | {"description": "A read token on an admin route."}},
    dependencies=[admin_scope],
    summary="Start a retrain",
)
def retrain(state: ApiState = Depends(get_state)) -> dict[str, Any]:  # noqa: B008
    """Send the `simstream.retrain` Celery task to the `train` queue; answer its id.

    The task trains a candidate, evaluates it against the active model and
    promotes it when better; the node then re-indexes and flips when caught up.
    """
    from workers.celery_app import RETRAIN_TASK, TRAIN_QUEUE, make_celery

    celery = make_celery(state.settings)
    try:
        result = celery.send_task(
            RETRAIN_TASK,
            kwargs={"triggered_by": "api"},
            queue=TRAIN_QUEUE,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception as e:  # kombu raises many transport errors; all mean "broker down"
        log.warning("api.retrain_not_sent", error=f"{type(e).__name__}: {e}")
        raise RequestError(f"The Celery broker did not accept the task: {e}", 503) from None
    finally:
        celery.close()
    log.info("api.retrain_sent", task_id=result.id)
    return {"task_id": str(result.id), "task": RETRAIN_TASK, "queue": TRAIN_QUEUE}


@router.get(
    "/admin/runs",
    response_model=RetrainRuns,
    responses={**ERRORS, 403: ERRORS[401] | {"description": "A read token on an admin route."}},
    dependencies=[admin_scope],
    summary="Recorded retrain runs, newest first",
)
def runs(
    state: ApiState = Depends(get_state),  # noqa: B008
    limit: int = Query(50, ge=1, le=1000, description="Most runs to return."),
) -> dict[str, Any]:
    """Who triggered each run, data size, both models' metrics, duration and the decision."""
    from workers.retrain import list_runs

    return {"runs": list_runs(state.settings.registry_dir, limit=limit)}


def dead_letter_filter(
    reason: str | None = Query(None, description="Only this reason code."),
    partition: int | None = Query(None, ge=0, description="Only this source partition."),
    from_offset: int | None = Query(None, ge=0, description="Covering source offsets >= this."),
    to_offset: int | None = Query(None, ge=0, description="Covering source offsets <= this."),
) -> DlqFilter:
    """The dead letters a request selects."""
    from workers.ingest.dlq import DlqFilter

    return DlqFilter(reason, partition, from_offset, to_offset)


def _read_dead_letters(state: ApiState, read: Callable[[DeadLetterReader], T]) -> T:
    """``read`` over a reader of the dead-letter topic; an unreadable topic is a 503."""
    from workers.ingest.config import IngestConfig
    from workers.ingest.dlq import DeadLetterReader

    try:
        with DeadLetterReader(IngestConfig.from_settings(state.settings)) as reader:
            return read(reader)
    except KafkaError as e:
        raise RequestError(f"The dead-letter topic cannot be read: {e}", 503) from None


@router.get(
    "/admin/dead-letters",
    response_model=DeadLetters,
    responses={**ERRORS, 403: ERRORS[401] | {"description": "A read token on an admin route."}},
    dependencies=[admin_scope],
    summary="Dead letters, filtered and paged",
)
def dead_letters(
    state: ApiState = Depends(get_state),  # noqa: B008
    selected: DlqFilter = Depends(dead_letter_filter),  # noqa: B008
    limit: int = Query(50, ge=1, le=1000, description="Most letters to return."),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
) -> dict[str, Any]:
    """The dead letters, as `simstream dlq list` prints them: each source position once
    (the first record of it; a range re-run after a crash writes its letters again).

    Replay them with `simstream dlq replay` (it re-embeds their source offsets).
    """
    page = _read_dead_letters(state, lambda reader: reader.page(selected, cursor, limit))
    return {
        "dead_letters": [entry.to_dict() for entry in page.entries],
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/admin/dead-letters/count",
    response_model=DeadLetterCount,
    responses={**ERRORS, 403: ERRORS[401] | {"description": "A read token on an admin route."}},
    dependencies=[admin_scope],
    summary="How many dead letters, per reason",
)
def dead_letter_count(
    state: ApiState = Depends(get_state),  # noqa: B008
    selected: DlqFilter = Depends(dead_letter_filter),  # noqa: B008
) -> dict[str, Any]:
    """The selected source positions (each once), per reason, and the records naming
    them, as `simstream dlq count` prints them."""
    counted = _read_dead_letters(state, lambda reader: reader.count(selected))
    return {
        "dead_letters": counted.letters,
        "records": counted.records,
        "by_reason": counted.by_reason,
    }
