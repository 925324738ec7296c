"""Probes and metrics: ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (no auth).

The probes are coroutines that make no blocking call and take no lock a request
may hold: they answer on the event loop even when every thread of the pool is
busy, so a liveness probe never restarts a node for being loaded.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.api.schemas import Health, Readiness
from workers.api.state import ApiState, get_state

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process answers (nothing else is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready, with the reason."}},
    summary="Readiness",
)
async def readyz(state: ApiState = Depends(get_state)) -> JSONResponse:  # noqa: B008
    """Ready when the node can answer queries correctly: a generation serves, its
    consumer is healthy, and it has caught up (lag ≤ `SIMSTREAM_API_READY_MAX_LAG`
    events) once; a later burst of lag makes answers say `degraded` but does not
    take the node out of rotation. 503 with the reason otherwise. Only the
    partitions the node holds count (named in `partitions`)."""
    node = state.node
    ready, reason = node.ready()
    body = {
        "ready": ready,
        "reason": reason,
        "node": node.config.cluster.node_id,
        "partitions": list(node.config.owned),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
    summary="Prometheus metrics",
)
async def prometheus() -> Response:
    """Every metric of this process (API latency per route, cache, index, freshness…)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
