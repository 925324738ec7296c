"""`run_retrain`: one retrain run, from the replayed items to a promoted or rejected version.

Steps; nothing that is served changes before the last one:

1. skip a task id that already ran (a copy redelivered by the broker); when
   the trigger names a schedule period, claim it (`claim_slot`): another
   message for the same period is a duplicate and is skipped;
2. take the retrain lease: one run at a time, a second one is skipped as busy;
3. replay ``items`` into the labelled items (newest state per id, deletes
   honoured, at most ``retrain_max_per_class`` per class), converted with the
   active model's input spec;
4. hold out ``retrain_holdout`` of every class;
5. fine-tune the active encoder, or train from scratch (``retrain_from_scratch``,
   or no active model yet); with ``retrain_ssl`` set, a self-supervised
   pre-training on the unlabelled items of the replay comes first, and the
   supervised step fine-tunes its result;
6. save the candidate to a scratch registry and load it back with
   `Registry.load` (verified, safe mode), then evaluate it and the active model
   on the same hold-out: a candidate that cannot be loaded or embed is rejected;
7. decide (`decide`: recall@1 must beat the active model's by more than
   ``retrain_promote_margin``), register the candidate with its metrics and the
   decision, and promote it only if it won and this run still holds the lease.

A crash before step 7's promotion leaves the active model serving. Every run is
recorded in ``runs.jsonl`` (`list_runs`) and counted in
``simstream_retrain_runs_total{decision}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
import structlog

from model.datasets import Dataset
from model.pipeline import train_evaluate_register
from model.registry import Encoder, ModelVersion, Registry
from model.training import TrainConfig, TrainResult
from model.vectors import is_vectors
from simstream.errors import RetrainError, SimstreamError
from simstream.log import get_logger
from workers import metrics
from workers.retrain.config import RetrainConfig
from workers.retrain.coordination import (
    NEW_ITEMS,
    RUN_LEASE_TTL_S,
    Lease,
    claim_slot,
    coordination_redis,
    parse_trigger,
    release_slot,
    running_key,
)
from workers.retrain.dataset import (
    bound_per_class,
    infer_spec,
    read_labelled,
    stratified_split,
    to_dataset,
    unlabelled_dataset,
)
from workers.retrain.decision import Decision, decide
from workers.retrain.evaluation import evaluate, trained_classes
from workers.retrain.runs import append_run, completed_run

log = get_logger("retrain")


def run_retrain(
    config: RetrainConfig,
    triggered_by: str = "manual",
    task_id: str | None = None,
    slot: str | None = None,
    *,
    registry: Registry | None = None,
    client: redis.Redis | None = None,
) -> dict[str, Any]:
    """Train, evaluate and maybe promote a new encoder version; return the run record.

    Args:
        config: the retrain config.
        triggered_by: ``schedule``, ``new-items``, ``manual``…; beat appends
            ``@<slot>``, the schedule period it fires for.
        task_id: the Celery task id (a redelivered task keeps its period claim).
        slot: the schedule period, when not embedded in ``triggered_by``.
        registry: the model registry (default: ``config.registry_dir``).
        client: the coordination Redis (default: ``config.coordination_url``).

    Returns:
        The run record (see `list_runs`): ``decision`` is ``promoted``,
        ``rejected`` or ``skipped``.

    Raises:
        RetrainError: the run failed (recorded as ``failed``); the active model
            keeps serving.
    """
    source, slot = parse_trigger(triggered_by, slot)
    run_id = uuid.uuid4().hex[:12]
    record: dict[str, Any] = {
        "run_id": run_id,
        "task_id": task_id,
        "triggered_by": source,
        "slot": slot,
        "status": "running",
        "started_at": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    bound = log.bind(run_id=run_id, task_id=task_id, triggered_by=source, slot=slot)
    client = client or coordination_redis(config)
    done = completed_run(config.registry_dir, task_id) if task_id else None
    if done is not None:
        reason = f"task {task_id} already ran (run {done['run_id']}: {done.get('decision')})"
        return _finish(config, record, "skipped", reason, bound)
    if slot is not None and not claim_slot(client, config, slot, task_id or run_id):
        return _finish(config, record, "skipped", f"period {slot} already has its run", bound)
    lease = Lease(client, running_key(config), RUN_LEASE_TTL_S)
    if not lease.acquire():
        return _finish(config, record, "skipped", "another retrain is running", bound)
    started = time.monotonic()
    record["leased"] = True
    append_run(config.registry_dir, record)
    bound.info("retrain.started")
    try:
        with lease.kept_alive() as lost:
            return _retrain(
                config, registry or Registry(config.registry_dir), record, lost, started, bound
            )
    except BaseException as e:
        record["duration_s"] = round(time.monotonic() - started, 3)
        _finish(config, record, "failed", f"{type(e).__name__}: {e}", bound)
        if slot is not None and source == NEW_ITEMS:
            # The next check may try again; a schedule period keeps its (failed) run.
            with contextlib.suppress(redis.RedisError):
                release_slot(client, config, slot, task_id or run_id)
        if isinstance(e, Exception):
            raise RetrainError(f"Retrain run {run_id} failed: {e}") from e
        raise


def _retrain(
    config: RetrainConfig,
    registry: Registry,
    record: dict[str, Any],
    lost: threading.Event,
    started: float,
    log: structlog.stdlib.BoundLogger,
) -> dict[str, Any]:
    active = registry.active()
    active_record = registry.get(active) if active else None
    record["active_version"] = active
    if active_record is not None and is_vectors(active_record.config):
        return _finish(
            config,
            record,
            "skipped",
            f"the active model {active} indexes your own vectors (registered with "
            "`simstream models register-vectors`): it has no encoder to retrain. "
            "Register and promote a trained model to retrain",
            log,
            started,
        )
    active_encoder = registry.load(active) if active else None

    dataset, unlabelled = _replayed_data(config, active_encoder, record)
    if dataset is None:
        return _finish(
            config,
            record,
            "skipped",
            "not enough labelled data: expected at least 2 classes with 2 items each. "
            f"Received: {record['data']['class_counts']}",
            log,
            started,
        )
    train_part, holdout = stratified_split(dataset, config.retrain_holdout, config.model_seed)
    record["data"].update(train=len(train_part), holdout=len(holdout))

    scratch = config.retrain_from_scratch or active_encoder is None
    record["mode"] = "scratch" if scratch else "fine-tune"
    log.info("retrain.training_candidate", mode=record["mode"], examples=len(train_part))
    seen = trained_classes(active_record.config) if active_record else None
    judged: dict[str, Any] = {}
    trained = train_evaluate_register(
        train_part,
        train_config(config, active_record),
        registry,
        initial=None if scratch else active_encoder,
        evaluate=functools.partial(
            _judge, config, record, judged, active_encoder, seen, train_part, holdout, log
        ),
        config_extra={"retrain": {k: record[k] for k in ("run_id", "mode")}},
        fit=None
        if unlabelled is None
        else functools.partial(_pretrain_then_train, config.retrain_ssl, unlabelled, record, log),
    )
    if trained.version is None:
        reason = f"the candidate failed to load or embed: {judged['broken']}"
        return _finish(config, record, "rejected", reason, log, started)
    decision: Decision = judged["decision"]
    version = trained.version.version
    record["candidate_version"] = version
    if not decision.promote:
        return _finish(config, record, "rejected", decision.reason, log, started)
    if lost.is_set():
        raise RetrainError("the retrain lease was lost before promotion; nothing promoted")
    registry.verify(version)
    registry.promote(version)
    record["active_after"] = version
    return _finish(config, record, "promoted", decision.reason, log, started)


def _judge(
    config: RetrainConfig,
    record: dict[str, Any],
    judged: dict[str, Any],
    active_encoder: Encoder | None,
    seen: list[str] | None,
    train_part: Dataset,
    holdout: Dataset,
    log: structlog.stdlib.BoundLogger,
    result: TrainResult,
) -> dict[str, Any] | None:
    """Evaluate the candidate beside the active model and decide; return the metrics to register.

    None (nothing registered) when the candidate cannot be loaded or embed. The
    decision (or why the candidate is broken) is left in ``judged``.
    """
    record["training"] = {
        "epochs": result.epochs_run,
        "seconds": round(result.train_seconds, 3),
        "final_loss": result.history.get("loss", [None])[-1],
    }
    active_metrics = None
    if active_encoder is not None:
        active_metrics = evaluate(
            active_encoder, train_part, holdout, seen, config.embed_batch_size
        )
    candidate_metrics, broken = _evaluate_loaded(result, train_part, holdout, seen, config)
    record["metrics"] = {"candidate": candidate_metrics, "active": active_metrics}
    record["margin"] = config.retrain_promote_margin
    if candidate_metrics is None:
        judged["broken"] = broken
        return None
    decision = decide(candidate_metrics, active_metrics, config.retrain_promote_margin)
    judged["decision"] = decision
    record["gain"] = decision.gain
    log.info("retrain.candidate_evaluated", promote=decision.promote, reason=decision.reason)
    return {
        **candidate_metrics,
        "retrain": {
            "run_id": record["run_id"],
            "triggered_by": record["triggered_by"],
            "active_version": record["active_version"],
            "active_metrics": active_metrics,
            "margin": config.retrain_promote_margin,
            "decision": "promote" if decision.promote else "reject",
            **decision.to_dict(),
        },
    }


def _pretrain_then_train(
    method: str,
    unlabelled: Dataset,
    record: dict[str, Any],
    log: structlog.stdlib.BoundLogger,
    data: Dataset,
    config: TrainConfig,
    initial: Encoder | None = None,
) -> TrainResult:
    """Self-supervised pre-training on ``unlabelled``, then the supervised step on ``data``.

    The fit hook of a run with ``retrain_ssl``: the pre-trained encoder is what
    the supervised step fine-tunes. What the pre-training did goes to ``record["ssl"]``.
    """
    from model.ssl import train_ssl
    from model.training import train

    log.info("retrain.ssl_pretraining", method=method, examples=len(unlabelled))
    pretrained = train_ssl(unlabelled, config, method=method, initial=initial)
    record["ssl"] = {
        "method": pretrained.dataset["self_supervised"],
        "examples": len(unlabelled),
        "epochs": pretrained.epochs_run,
        "seconds": round(pretrained.train_seconds, 3),
        "final_loss": pretrained.history.get("loss", [None])[-1],
    }
    return train(data, config, initial=pretrained.encoder())


def _replayed_data(
    config: RetrainConfig, active: Encoder | None, record: dict[str, Any]
) -> tuple[Dataset | None, Dataset | None]:
    """The replayed, bounded, converted items, and the unlabelled ones for ``retrain_ssl``.

    Returns:
        The labelled data (None when too few to split and compare) and, when
        ``retrain_ssl`` is set and at least 2 unlabelled items fit the input
        spec, the newest ``retrain_max_per_class`` × classes of them (else None).
    """
    replay = read_labelled(config, unlabelled=bool(config.retrain_ssl))
    items = bound_per_class(replay.items.values(), config.retrain_max_per_class)
    record["source_offsets"] = {str(p): o for p, o in sorted(replay.end_offsets.items())}
    record["data"] = {"labelled": len(replay.items), "replay": replay.stats.to_dict()}
    dataset, rejected, class_counts = None, 0, {}
    if items:
        spec = active.input_spec if active else infer_spec(items)
        dataset, _, rejected = to_dataset(items, spec, name=f"items:{config.topic_items}")
        counts = np.bincount(dataset.y, minlength=dataset.num_classes).tolist()
        class_counts = dict(zip(dataset.class_names, counts, strict=True))
    record["data"].update(
        examples=len(dataset) if dataset else 0,
        classes=len(class_counts),
        class_counts=class_counts,
        rejected_by_input_spec=rejected,
    )
    unlabelled = None
    if dataset is not None and replay.unlabelled:
        limit = config.retrain_max_per_class * max(1, len(class_counts))
        unlabelled = unlabelled_dataset(
            replay.unlabelled.values(), dataset.input_spec, limit, f"unlabelled:{dataset.name}"
        )
    record["data"]["unlabelled"] = (
        0 if unlabelled is None or len(unlabelled) < 2 else len(unlabelled)
    )
    if sum(1 for count in class_counts.values() if count >= 2) < 2:
        return None, None
    return dataset, unlabelled if record["data"]["unlabelled"] else None


def _evaluate_loaded(
    result: TrainResult,
    index: Dataset,
    queries: Dataset,
    seen: list[str] | None,
    config: RetrainConfig,
) -> tuple[dict[str, Any] | None, str | None]:
    """Round-trip the candidate through a scratch registry and evaluate the loaded copy.

    Returns:
        The metrics, or None and why the candidate cannot be loaded or embed.
    """
    with tempfile.TemporaryDirectory(prefix="simstream-candidate-") as scratch:
        try:
            staged = Registry(scratch)
            version = staged.register(
                result.model, result.input_spec, config=result.model_config()
            ).version
            loaded = staged.load(version)
            return evaluate(loaded, index, queries, seen, config.embed_batch_size), None
        except (SimstreamError, ValueError, TypeError, OSError) as e:
            return None, f"{type(e).__name__}: {e}"


def train_config(config: RetrainConfig, active: ModelVersion | None) -> TrainConfig:
    """The run's training config: the active model's own, else the config's model defaults.

    Epochs and seed come from the config; no validation split is taken (the
    run's hold-out is the judge, and early stopping on it would bias the verdict).
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    previous: dict[str, Any] = {}
    if active is not None:
        training = active.config.get("training") or {}
        previous = {k: v for k, v in (training.get("config") or {}).items() if k in fields}
        if not previous:
            previous = {
                "embedding_dim": int(
                    active.config.get("embedding_dim", config.model_embedding_dim)
                ),
                "distance": active.config.get("distance", config.model_distance),
            }
    base = {
        "encoder": config.model_encoder,
        "embedding_dim": config.model_embedding_dim,
        "loss": config.model_loss,
        "distance": config.model_distance,
    }
    return TrainConfig(
        **{
            **base,
            **previous,
            "epochs": config.model_epochs,
            "seed": config.model_seed,
            "validation_split": 0.0,
            "verbose": 0,
        }
    )


def _finish(
    config: RetrainConfig,
    record: dict[str, Any],
    decision: str,
    reason: str,
    log: structlog.stdlib.BoundLogger,
    started: float | None = None,
) -> dict[str, Any]:
    record.update(
        status="failed" if decision == "failed" else "finished",
        decision=decision,
        reason=reason,
        finished_at=_now(),
    )
    if started is not None:
        record["duration_s"] = round(time.monotonic() - started, 3)
    try:
        append_run(config.registry_dir, record)
    except OSError as e:
        log.error("retrain.run_record_not_written", error=str(e))
    metrics.RETRAIN_RUNS.labels(decision).inc()
    log.info("retrain.finished", decision=decision, reason=reason, **_versions(record))
    return record


def _versions(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("active_version", "candidate_version", "active_after", "duration_s")
    found = {k: record[k] for k in keys if k in record}
    for side, values in (record.get("metrics") or {}).items():
        if values:
            found[f"{side}_recall_at_1"] = values.get("recall@1")
    return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
