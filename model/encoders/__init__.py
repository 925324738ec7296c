"""Encoder architectures, resolved by `get` and built by `build`.

- ``cnn``: `CNNEncoder`, small images (digits, MNIST);
- ``mlp``: `MLPEncoder`, feature vectors;
- ``backbone``: `BackboneEncoder`, ResNet50, EfficientNetB0–B3, MobileNetV3
  or ConvNeXt-Tiny from `keras.applications` with GeM pooling, trained from
  scratch or from a weights file the user supplies (never downloaded), frozen,
  partly or fully trainable.

Every encoder ends in a ``Dense`` embedding layer and `L2Normalization`.
Importing this package registers the custom layers, which loading a saved
encoder needs.
"""

from __future__ import annotations

from typing import Any

import keras

from model.encoders.backbone import BackboneEncoder
from model.encoders.base import EMBEDDING_LAYER, NORMALIZATION_LAYER, EncoderBuilder
from model.encoders.cnn import CNNEncoder
from model.encoders.layers import GeneralizedMeanPooling2D, L2Normalization
from model.encoders.mlp import MLPEncoder
from model.inputs import InputSpec
from simstream.errors import ModelError

__all__ = [
    "EMBEDDING_LAYER",
    "NORMALIZATION_LAYER",
    "BackboneEncoder",
    "CNNEncoder",
    "EncoderBuilder",
    "GeneralizedMeanPooling2D",
    "L2Normalization",
    "MLPEncoder",
    "build",
    "get",
    "names",
    "serialize",
]

_BUILDERS: dict[str, type[EncoderBuilder]] = {
    cls.name: cls for cls in (CNNEncoder, MLPEncoder, BackboneEncoder)
}


def names() -> list[str]:
    """Names of the built-in encoders."""
    return sorted(_BUILDERS)


def get(identifier: str | dict[str, Any] | EncoderBuilder) -> EncoderBuilder:
    """Resolve an encoder builder from a name, a config dict or an instance.

    Args:
        identifier: ``"cnn"``, ``"mlp"``, ``"backbone"``; a dict
            ``{"name": ..., **config}`` (what `serialize` returns); or an
            `EncoderBuilder`, returned as is.

    Raises:
        ModelError: for an unknown name or an invalid config.
    """
    if isinstance(identifier, EncoderBuilder):
        return identifier
    if isinstance(identifier, str):
        return _lookup(identifier)()
    if isinstance(identifier, dict) and "name" in identifier:
        return _lookup(str(identifier["name"])).from_config(identifier)
    raise ModelError(
        "Invalid value for argument `encoder`. Expected a name, a config dict with 'name' "
        f"or an EncoderBuilder. Received: encoder={identifier!r}"
    )


def serialize(builder: EncoderBuilder) -> dict[str, Any]:
    """``{"name": ..., **config}``: what `get` turns back into ``builder``."""
    return {"name": builder.name, **builder.get_config()}


def build(
    identifier: str | dict[str, Any] | EncoderBuilder,
    data_spec: InputSpec,
    embedding_dim: int,
    seed: int | None = None,
) -> tuple[keras.Model, InputSpec]:
    """`get` then `EncoderBuilder.build`: the model and the input spec it takes."""
    return get(identifier).build(data_spec, embedding_dim, seed=seed)


def _lookup(name: str) -> type[EncoderBuilder]:
    cls = _BUILDERS.get(name.strip().lower())
    if cls is None:
        raise ModelError(f"Unknown encoder. Expected one of {names()}. Received: encoder={name!r}")
    return cls
