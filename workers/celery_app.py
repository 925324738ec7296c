"""The Celery application: at-least-once delivery of thin, idempotent tasks.

Configuration (``docs/architecture.md``, the contracts): JSON only (no pickle), ``acks_late`` with
``task_reject_on_worker_lost`` so a killed worker's task is redelivered,
prefetch 1, three queues (``embed`` on GPU workers, ``train``, ``default``).
Tasks carry ids, offsets and versions — never payloads or vectors.

TensorFlow is never initialised before fork: nothing here imports it. With
``--pool solo`` (one process, the default on a GPU) no fork follows, so the
worker loads and warms the active encoder before taking tasks; with
``prefork`` (one process per core, the default on CPUs) each child loads it
right after its fork (see `workers.ingest.device`).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from simstream.settings import Settings

EMBED_QUEUE, TRAIN_QUEUE, DEFAULT_QUEUE = "embed", "train", "default"
EMBED_TASK = "simstream.embed_range"
RETRAIN_TASK = "simstream.retrain"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from settings, without tasks: what senders (the dispatcher,
    beat, the admin API) use. The worker's app, with its tasks, is `workers.tasks.configure`."""
    app = Celery("simstream", broker=settings.celery_broker_url)
    app.conf.update(
        result_backend=settings.celery_result_backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A prefork child loads and warms its encoder before it reports up.
        worker_proc_alive_timeout=120.0,
        task_queues=(Queue(EMBED_QUEUE), Queue(TRAIN_QUEUE), Queue(DEFAULT_QUEUE)),
        task_default_queue=DEFAULT_QUEUE,
        task_routes={EMBED_TASK: {"queue": EMBED_QUEUE}, RETRAIN_TASK: {"queue": TRAIN_QUEUE}},
        broker_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Our structured logs go to stderr; a prefork child's must not be swallowed.
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        # A running embed task reports STARTED (and refreshes it): the dispatcher
        # does not send a running range again.
        task_track_started=True,
        timezone="UTC",
    )
    app.conf.simstream_settings = settings
    return app
