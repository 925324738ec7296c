"""`MLPEncoder`: dense layers for feature vectors (or flattened images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import keras

from model.encoders.base import EncoderBuilder
from model.inputs import InputSpec
from simstream.errors import ModelError


class MLPEncoder(EncoderBuilder):
    """``Dense → (LayerNorm) → activation`` per hidden size; images are flattened first.

    Args:
        hidden: units of each hidden layer (may be empty: a linear encoder).
        activation: activation of the hidden layers.
        layer_norm: whether each hidden layer is followed by layer normalisation.
        dropout: dropout rate after each hidden layer.
    """

    name: ClassVar[str] = "mlp"

    def __init__(
        self,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        if any(int(h) < 1 for h in hidden) or not 0 <= dropout < 1:
            raise ModelError(
                "Expected positive hidden sizes and 0 ≤ dropout < 1. "
                f"Received: hidden={hidden}, dropout={dropout}"
            )
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.layer_norm = bool(layer_norm)
        self.dropout = float(dropout)

    def features(self, inputs: Any, spec: InputSpec) -> Any:
        x = keras.layers.Flatten(name="flatten")(inputs) if spec.kind == "image" else inputs
        for i, units in enumerate(self.hidden):
            x = keras.layers.Dense(units, name=f"dense{i}")(x)
            if self.layer_norm:
                x = keras.layers.LayerNormalization(name=f"norm{i}")(x)
            x = keras.layers.Activation(self.activation, name=f"act{i}")(x)
            if self.dropout:
                x = keras.layers.Dropout(self.dropout, name=f"dropout{i}")(x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "layer_norm": self.layer_norm,
            "dropout": self.dropout,
        }
