"""Choose where the encoder runs: the GPU when present (``auto``), or force ``cpu``/``gpu``."""

from __future__ import annotations

from simstream.errors import ConfigError
from simstream.log import get_logger

log = get_logger("device")


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
    log.info("device selected", requested=device, chosen=chosen, backend=backend, gpus=len(gpus))
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
