"""Shared fixtures: a real embedded broker and Valkey started through simstream's own code.

Services start once per session on free ports. Each test gets its own topics
(unique names) and its own data directory. Nothing is skipped when ``CI=true``:
a missing service is a failure there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from simstream.settings import Settings
from simstream.stack.local import LocalStack
from simstream.stack.process import free_port

# TensorFlow's C++ start-up chatter is noise in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _base_settings(tmp: Path, **overrides: object) -> Settings:
    return Settings.load(data_dir=tmp, **overrides)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The embedded broker and Valkey (services only), shared by the whole session."""
    broker_port, valkey_port = free_port(), free_port()
    settings = _base_settings(
        tmp_path_factory.mktemp("stack"),
        broker_port=broker_port,
        valkey_port=valkey_port,
        kafka_bootstrap_servers=f"127.0.0.1:{broker_port}",
        redis_cache_url=f"redis://127.0.0.1:{valkey_port}/0",
        celery_broker_url=f"redis://127.0.0.1:{valkey_port}/1",
        celery_result_backend=f"redis://127.0.0.1:{valkey_port}/2",
    )
    local = LocalStack(settings, services_only=True)
    try:
        local.start()
    except Exception as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"embedded stack unavailable: {e}")
    yield local
    local.stop()


@pytest.fixture
def settings(stack: LocalStack, tmp_path: Path) -> Settings:
    """Settings pointing at the session's stack, with unique topics and a fresh data dir."""
    suffix = uuid.uuid4().hex[:10]
    base = stack.settings
    return Settings.load(
        data_dir=tmp_path,
        broker_port=base.broker_port,
        valkey_port=base.valkey_port,
        kafka_bootstrap_servers=base.kafka_bootstrap_servers,
        redis_cache_url=base.redis_cache_url,
        celery_broker_url=base.celery_broker_url,
        celery_result_backend=base.celery_result_backend,
        topic_items=f"items-{suffix}",
        topic_dlq=f"items-{suffix}.dlq",
        topic_embeddings_prefix=f"embeddings-{suffix}",
        kafka_session_timeout_ms=6000,
        kafka_max_poll_interval_ms=10000,
    )


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST test set shipped beside the repository (tests and benchmarks only)."""
    if not MNIST_DIR.is_dir():
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(f"MNIST test set missing at {MNIST_DIR}")
        pytest.skip(f"MNIST test set missing at {MNIST_DIR}")
    return MNIST_DIR
