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
from simstream.stack.local import LocalStack, local_stack_settings

# TensorFlow's C++ start-up chatter is noise in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The embedded broker and Valkey (services only), shared by the whole session."""
    local = LocalStack(local_stack_settings(tmp_path_factory.mktemp("stack")), services_only=True)
    try:
        local.start()
    except Exception as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"embedded stack unavailable: {e}")
    yield local
    local.stop()


def unique_settings(base: Settings, data_dir: Path, **overrides: object) -> Settings:
    """Settings on ``base``'s broker and Valkey with unique topics, short group timeouts
    and their own data dir; ``overrides`` win."""
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "topic_items": f"items-{suffix}",
        "topic_dlq": f"items-{suffix}.dlq",
        "topic_embeddings_prefix": f"embeddings-{suffix}",
        "kafka_session_timeout_ms": 6000,
        "kafka_max_poll_interval_ms": 10000,
    }
    values.update(overrides)
    return local_stack_settings(data_dir, base.broker_port, base.valkey_port, **values)


@pytest.fixture
def settings(stack: LocalStack, tmp_path: Path) -> Settings:
    """Settings pointing at the session's stack, with unique topics and a fresh data dir."""
    return unique_settings(stack.settings, tmp_path)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The MNIST test set shipped beside the repository (tests and benchmarks only)."""
    if not MNIST_DIR.is_dir():
        if os.environ.get("CI") == "true":
            raise FileNotFoundError(f"MNIST test set missing at {MNIST_DIR}")
        pytest.skip(f"MNIST test set missing at {MNIST_DIR}")
    return MNIST_DIR
