"""GPU embedding throughput of simstream's encoders under the JAX backend.

Run on a machine with a GPU (no TensorFlow needed)::

    KERAS_BACKEND=jax python bench/gpu_embed.py --out gpu_embed.json

Measures, for the small CNN on 28×28 grey images (MNIST-sized) and the
EfficientNetB0 backbone on 224×224 RGB, the encoder alone (``Encoder.embed``)
at several batch sizes, fed float32 model inputs and fed uint8 images (scaled
on the device: the path embed workers use), against the same Keras model's
jitted forward pass on device-resident inputs (the device limit), and the CPU
cost of turning raw payloads into model inputs (``InputSpec``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _timed(fn: Any, repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def _device_forward(model: Any, x: np.ndarray, repeats: int) -> float:
    """Seconds per batch of the jitted stateless forward pass on device-resident data."""
    import jax

    xd = jax.device_put(x)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    forward = jax.jit(lambda t, n, xb: model.stateless_call(t, n, xb, training=False)[0])
    return _timed(lambda: forward(trainable, frozen, xd).block_until_ready(), repeats)


def measure(
    name: str, data_spec: Any, builder: str, batches: list[int], repeats: int
) -> dict[str, Any]:
    """Throughput of one encoder at several batch sizes."""
    import keras

    from model import encoders
    from model.registry import Encoder

    model, spec = encoders.get(builder).build(data_spec, embedding_dim=64, seed=0)
    encoder = Encoder(model, spec, version="bench")
    rows = []
    for batch in batches:
        images = np.random.default_rng(0).integers(0, 256, (batch, *spec.shape), dtype=np.uint8)
        x = spec.to_model_batch(images)
        seconds = _timed(lambda x=x, b=batch: encoder.embed(x, batch_size=b), repeats)
        row = {"batch": batch, "embed_items_per_s": batch / seconds}
        # What embed workers send: uint8 images, scaled on the device.
        seconds = _timed(lambda u=images, b=batch: encoder.embed(u, batch_size=b), repeats)
        row["embed_uint8_items_per_s"] = batch / seconds
        if keras.backend.backend() == "jax":
            device = _device_forward(model, x, repeats)
            row["device_forward_items_per_s"] = batch / device
            row["embed_vs_device_ratio"] = row["embed_items_per_s"] / (batch / device)
            row["embed_uint8_vs_device_ratio"] = row["embed_uint8_items_per_s"] / (batch / device)
        rows.append(row)
    raw = np.random.default_rng(1).integers(0, 256, (2048, *data_spec.shape[:2]), dtype=np.uint8)
    started = time.perf_counter()
    for item in raw:
        spec.to_model_input(item)
    preprocess = len(raw) / (time.perf_counter() - started)
    return {
        "encoder": name,
        "input": list(spec.shape),
        "rows": rows,
        "preprocess_items_per_s_per_core": preprocess,
    }


def main() -> None:
    """Parse arguments, measure, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_embed.json"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="Small sizes (smoke test on CPU).")
    args = parser.parse_args()

    import keras

    from model.inputs import InputSpec

    devices: list[str] = []
    if keras.backend.backend() == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    cnn_batches = [64, 256] if args.quick else [256, 1024, 4096, 16384]
    backbone_batches = [8] if args.quick else [64, 256]
    results = {
        "backend": keras.backend.backend(),
        "devices": devices,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "results": [
            measure("cnn", InputSpec.image(28, 28, 1), "cnn", cnn_batches, args.repeats),
            measure(
                "backbone (EfficientNetB0)",
                InputSpec.image(224 if not args.quick else 64, 224 if not args.quick else 64, 3),
                "backbone",
                backbone_batches,
                max(3, args.repeats // 4),
            ),
        ],
    }
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if not __package__:
        # Run as a script, bench/ comes first on sys.path, and bench/model.py would shadow
        # the `model` package: look packages up from the repository root instead.
        sys.path[0] = str(Path(__file__).resolve().parents[1])
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
