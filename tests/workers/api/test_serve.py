"""`simstream serve` as a real process: it serves, and SIGTERM ends it with a final snapshot."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from simstream.stack.process import free_port
from tests.waiting import wait_for
from tests.workers.api.conftest import Served, embed_pending, png

pytestmark = pytest.mark.services


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_answers_lookups_and_stops_on_sigterm_with_a_final_snapshot(
    served: Served, tmp_path: Path
) -> None:
    shutil.copytree(served.settings.registry_dir, tmp_path / "models")
    port = free_port()
    s = served.settings
    env = {
        **os.environ,
        "SIMSTREAM_DATA_DIR": str(tmp_path),
        "SIMSTREAM_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "SIMSTREAM_REDIS_CACHE_URL": s.redis_cache_url,
        "SIMSTREAM_CELERY_BROKER_URL": s.celery_broker_url,
        "SIMSTREAM_TOPIC_ITEMS": s.topic_items,
        "SIMSTREAM_TOPIC_DLQ": s.topic_dlq,
        "SIMSTREAM_TOPIC_EMBEDDINGS_PREFIX": s.topic_embeddings_prefix,
        "SIMSTREAM_PARTITIONS": str(s.partitions),
        "SIMSTREAM_API_PORT": str(port),
        "SIMSTREAM_SNAPSHOT_EVERY_S": "3600",
        "SIMSTREAM_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "simstream.cli.main", "serve"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or _ready(url), 90, 0.2, "serve ready")
        assert process.poll() is None, "serve exited early: " + log_path.read_text()[-3000:]
        lookup = httpx.post(url + "/v1/lookup", json={"id": "digit-0001", "k": 3}, timeout=10)
        assert lookup.status_code == 200, lookup.text
        assert len(lookup.json()["neighbors"]) == 3
        items = httpx.get(url + "/v1/stats", timeout=10).json()["items"]
        image = base64.b64encode(png(np.full((8, 8), 77, np.uint8))).decode()
        written = httpx.post(url + "/v1/items", json={"id": "served-new", "image": image})
        assert written.status_code == 202, written.text
        embed_pending(served.settings, served.encoder, served.node)
        query = {"id": "served-new", "k": 1, "after": written.json()["token"]}
        assert httpx.post(url + "/v1/lookup", json=query, timeout=30).status_code == 200
        live = httpx.get(url + "/v1/stats", timeout=10).json()["items"]
        assert live > items

        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    output = log_path.read_text(errors="replace")

    assert code == 0, output[-3000:]
    assert "serve.stopping" in output
    manifests = sorted((tmp_path / "snapshots" / served.version).glob("*/MANIFEST.json"))
    assert manifests, output[-3000:]
    assert json.loads(manifests[-1].read_text())["totals"]["live"] == live
