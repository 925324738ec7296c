"""`EncoderBuilder`: what every encoder architecture provides.

An encoder maps a model input (see `model.inputs.InputSpec`) to an
L2-normalised embedding. Each architecture is a small, configurable builder:
`EncoderBuilder.features` turns the input tensor into a feature vector, and
`EncoderBuilder.build` adds the shared head, a linear ``Dense`` embedding layer
followed by `L2Normalization`, so every encoder ends the same way and cosine
distance equals ``1 - dot product`` on its outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import keras

from model.encoders.layers import L2Normalization
from model.inputs import InputSpec
from simstream.errors import ModelError

EMBEDDING_LAYER = "embedding"
NORMALIZATION_LAYER = "l2_normalize"


class EncoderBuilder(ABC):
    """Base class of encoder architectures (not the runtime wrapper `model.registry.Encoder`).

    Subclasses set `name` and `kinds` and implement `features` and `get_config`.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("image", "vector")

    def input_spec(self, data_spec: InputSpec) -> InputSpec:
        """The model input this architecture wants for data described by ``data_spec``.

        Most architectures take the data as it is; a backbone may ask for a
        larger image or another scaling. Training converts raw data with the
        returned spec, and it is saved with the model.
        """
        return data_spec

    @abstractmethod
    def features(self, inputs: Any, spec: InputSpec) -> Any:
        """The feature vector ``(B, F)`` of an input tensor of ``spec.shape``."""

    def build(
        self, data_spec: InputSpec, embedding_dim: int, seed: int | None = None
    ) -> tuple[keras.Model, InputSpec]:
        """Build the encoder.

        Args:
            data_spec: the spec of the data it will be trained on.
            embedding_dim: size of the embedding.
            seed: seed of the embedding layer's initialiser (``None``: global seed).

        Returns:
            ``(model, spec)``: an uncompiled `keras.Model` from ``spec.shape`` to
            unit-norm ``(B, embedding_dim)`` embeddings, and the spec it takes.

        Raises:
            ModelError: when the input kind does not suit this architecture or
                ``embedding_dim`` < 1.
        """
        if data_spec.kind not in self.kinds:
            raise ModelError(
                f"Encoder {self.name!r} cannot take {data_spec.kind} inputs. Expected one of "
                f"{self.kinds}. Choose another encoder or dataset."
            )
        if embedding_dim < 1:
            raise ModelError(
                f"Invalid value for argument `embedding_dim`. Expected ≥ 1. "
                f"Received: embedding_dim={embedding_dim}"
            )
        spec = self.input_spec(data_spec)
        inputs = keras.Input(shape=spec.shape, dtype=spec.dtype, name="inputs")
        features = self.features(inputs, spec)
        embedding = keras.layers.Dense(
            embedding_dim,
            name=EMBEDDING_LAYER,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        )(features)
        outputs = L2Normalization(name=NORMALIZATION_LAYER, dtype="float32")(embedding)
        return keras.Model(inputs, outputs, name=f"{self.name}_encoder"), spec

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """The arguments that rebuild this builder (JSON-ready)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderBuilder:
        """Inverse of `get_config` (a ``name`` key is ignored)."""
        config = {k: v for k, v in config.items() if k != "name"}
        try:
            return cls(**config)
        except TypeError as e:
            raise ModelError(f"Invalid config for encoder {cls.name!r}: {e}") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))
