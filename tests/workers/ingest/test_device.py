"""The worker layout (processes, pool, encoder threads) and the encoder thread cap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simstream.settings import Settings
from workers.ingest import device
from workers.ingest.config import IngestConfig
from workers.ingest.device import WorkerLayout, cpu_cores, gpu_visible, worker_layout


def _config(**overrides: object) -> IngestConfig:
    return IngestConfig.from_settings(Settings.load(**overrides))


def test_on_cpus_a_worker_runs_one_single_threaded_encoder_per_core() -> None:
    cores = cpu_cores()
    layout = worker_layout(_config(device="cpu"))
    assert layout == WorkerLayout("solo" if cores == 1 else "prefork", cores, 1)


def test_on_a_gpu_a_worker_is_one_process_with_every_core() -> None:
    assert worker_layout(_config(device="gpu")) == WorkerLayout("solo", 1, cpu_cores())


def test_processes_and_threads_can_be_set() -> None:
    assert worker_layout(_config(device="cpu", worker_processes=3, encoder_threads=2)) == (
        WorkerLayout("prefork", 3, 2)
    )
    assert worker_layout(_config(device="cpu", worker_processes=3), processes=1) == (
        WorkerLayout("solo", 1, cpu_cores())
    )
    more_than_cores = cpu_cores() * 4
    assert worker_layout(_config(device="cpu"), processes=more_than_cores).encoder_threads == 1


def test_a_gpu_is_seen_through_the_driver_and_hidden_by_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "_NVIDIA_GPUS", tmp_path)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not gpu_visible()
    (tmp_path / "0000:01:00.0").mkdir()
    assert gpu_visible()
    assert worker_layout(_config(device="auto")) == WorkerLayout("solo", 1, cpu_cores())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not gpu_visible()
    assert worker_layout(_config(device="auto")).processes == cpu_cores()


def test_the_thread_cap_reaches_tensorflow_before_it_starts() -> None:
    # A fresh interpreter: in this one TensorFlow may already be running.
    code = (
        "from workers.ingest.device import configure_threads, select_device\n"
        "configure_threads(1)\n"
        "select_device('cpu')\n"
        "import tensorflow as tf\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "1"
