"""Where and how the encoder runs: the device, the worker's processes, their CPU threads.

On a GPU one worker process (pool ``solo``) feeds the device. On CPUs the
worker runs one process per core (pool ``prefork``), each encoder capped at
cores / processes threads: on a machine shared with the broker and the index,
single-threaded encoders side by side waste less CPU than one multi-threaded
encoder (measured in ``docs/benchmarks.md``). The layout is decided before any
fork and without importing a framework (`worker_layout`); each process applies
its thread cap before its framework initialises (`configure_threads`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from simstream.errors import ConfigError
from simstream.log import get_logger
from workers.ingest.config import IngestConfig

log = get_logger("device")

_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class WorkerLayout:
    """How one embed worker runs.

    Attributes:
        pool: ``solo`` (one process, no fork) or ``prefork`` (processes forked
            before any framework loads).
        processes: encoder processes.
        encoder_threads: CPU threads of each encoder.
    """

    pool: Literal["solo", "prefork"]
    processes: int
    encoder_threads: int


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_visible() -> bool:
    """Whether an NVIDIA GPU is visible, asked of the driver (no framework is imported)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return _NVIDIA_GPUS.is_dir() and any(_NVIDIA_GPUS.iterdir())


def worker_layout(config: IngestConfig, processes: int | None = None) -> WorkerLayout:
    """The layout for ``config`` (``processes`` overrides ``worker_processes``).

    Default: one process on a GPU; one per CPU core otherwise, each encoder with
    cores / processes threads (at least one).
    """
    gpu = config.device == "gpu" or (config.device == "auto" and gpu_visible())
    cores = cpu_cores()
    count = processes or config.worker_processes or (1 if gpu else cores)
    threads = config.encoder_threads or max(1, cores // count)
    return WorkerLayout("solo" if count == 1 else "prefork", count, threads)


def configure_threads(threads: int) -> None:
    """Cap the encoder's CPU threads; call before the backend runs its first operation."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
        elif backend == "torch":
            import torch

            torch.set_num_threads(threads)
    except RuntimeError as e:
        # TensorFlow refuses once its runtime is up (an in-process worker in tests).
        log.warning("device.threads_not_applied", threads=threads, error=str(e))
        return
    log.info("device.threads_set", threads=threads, backend=backend)


def select_device(device: str) -> str:
    """Configure the Keras backend for ``device`` before the encoder loads; return the choice.

    Raises:
        ConfigError: ``gpu`` was asked for and none is visible.
    """
    import keras

    backend = keras.backend.backend()
    gpus = _gpus(backend)
    if device == "cpu" and gpus:
        _hide_gpus(backend)
        gpus = []
    elif device == "gpu" and not gpus:
        raise ConfigError(
            "Invalid value for SIMSTREAM_DEVICE. Expected a visible GPU for device=gpu. "
            "Received: no GPU found"
        )
    chosen = "gpu" if gpus else "cpu"
    log.info("device.selected", requested=device, chosen=chosen, backend=backend, gpus=len(gpus))
    return chosen


def _gpus(backend: str) -> list[object]:
    if backend == "tensorflow":
        import tensorflow as tf

        return list(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return [d for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return list(range(torch.cuda.device_count()))
    return []


def _hide_gpus(backend: str) -> None:
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    elif backend == "jax":
        import jax

        jax.config.update("jax_platforms", "cpu")
