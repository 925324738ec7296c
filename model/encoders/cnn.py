"""`CNNEncoder`: a small convolutional encoder for small grey or colour images (8×8 to ~64×64)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import keras

from model.encoders.base import EncoderBuilder
from model.encoders.layers import GeneralizedMeanPooling2D
from model.inputs import InputSpec
from simstream.errors import ModelError

POOLINGS = ("gem", "avg", "max", "flatten")


class CNNEncoder(EncoderBuilder):
    """Blocks of ``convs_per_block`` 3×3 convolutions (+ batch norm + ReLU), then pooling.

    Each block but the last halves the spatial size with 2×2 max pooling while
    the feature map stays at least 4 pixels wide, so the same builder suits 8×8
    digits and 28×28 MNIST. The last block's map is reduced to a vector by
    ``pooling``; an optional hidden dense layer follows.

    Args:
        filters: output channels of each block.
        convs_per_block: convolutions per block.
        batch_norm: whether each convolution is followed by batch normalisation.
        pooling: ``gem`` (generalized mean), ``avg``, ``max`` or ``flatten``.
        hidden: units of a dense ReLU layer before the embedding (0: none).
        dropout: dropout rate before the embedding layer.
        bn_momentum: momentum of the batch-norm moving statistics; lower than
            Keras' 0.99 so short runs end with statistics that match the data.
    """

    name: ClassVar[str] = "cnn"
    kinds: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        filters: Sequence[int] = (32, 64, 128),
        convs_per_block: int = 2,
        batch_norm: bool = True,
        pooling: str = "gem",
        hidden: int = 0,
        dropout: float = 0.0,
        bn_momentum: float = 0.9,
    ) -> None:
        if not filters or any(int(f) < 1 for f in filters):
            raise ModelError(f"Expected positive filter counts. Received: filters={filters}")
        if pooling not in POOLINGS:
            raise ModelError(
                f"Invalid value for argument `pooling`. Expected one of {POOLINGS}. "
                f"Received: pooling={pooling!r}"
            )
        if convs_per_block < 1 or hidden < 0 or not 0 <= dropout < 1 or not 0 <= bn_momentum < 1:
            raise ModelError(
                "Expected convs_per_block ≥ 1, hidden ≥ 0, 0 ≤ dropout < 1 and "
                f"0 ≤ bn_momentum < 1. Received: convs_per_block={convs_per_block}, "
                f"hidden={hidden}, dropout={dropout}, bn_momentum={bn_momentum}"
            )
        self.filters = tuple(int(f) for f in filters)
        self.convs_per_block = int(convs_per_block)
        self.batch_norm = bool(batch_norm)
        self.pooling = pooling
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.bn_momentum = float(bn_momentum)

    def features(self, inputs: Any, spec: InputSpec) -> Any:
        x = inputs
        size = min(spec.shape[0], spec.shape[1])
        for block, filters in enumerate(self.filters):
            for conv in range(self.convs_per_block):
                x = keras.layers.Conv2D(
                    filters,
                    3,
                    padding="same",
                    use_bias=not self.batch_norm,
                    name=f"block{block}_conv{conv}",
                )(x)
                if self.batch_norm:
                    x = keras.layers.BatchNormalization(
                        momentum=self.bn_momentum, name=f"block{block}_bn{conv}"
                    )(x)
                x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
            if block < len(self.filters) - 1 and size >= 8:
                x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
                size //= 2
        if self.pooling == "gem":
            x = GeneralizedMeanPooling2D(name="gem_pool")(x)
        elif self.pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif self.pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        else:
            x = keras.layers.Flatten(name="flatten")(x)
        if self.hidden:
            x = keras.layers.Dense(self.hidden, activation="relu", name="hidden")(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name="dropout")(x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            "filters": list(self.filters),
            "convs_per_block": self.convs_per_block,
            "batch_norm": self.batch_norm,
            "pooling": self.pooling,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "bn_momentum": self.bn_momentum,
        }
