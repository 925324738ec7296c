"""Serializable layers of the encoders: GeM pooling and L2 normalisation.

Both are registered with Keras under the ``simstream`` package, so a saved
encoder reloads with ``safe_mode=True`` (no Lambda layer, no pickled code) once
this module is imported. They use `keras.ops` only and run under any backend.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="simstream")
class L2Normalization(keras.layers.Layer):  # type: ignore[misc]
    """Scale each vector to unit L2 norm along ``axis`` (all-zero vectors stay zero).

    Args:
        axis: the axis holding vector components.
        epsilon: floor of the squared norm, against division by zero.
        **kwargs: `keras.layers.Layer` arguments (``name``, ``dtype``…).
    """

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon

    def call(self, inputs: Any) -> Any:
        squared = ops.sum(ops.square(inputs), axis=self.axis, keepdims=True)
        return inputs * ops.rsqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="simstream")
class GeneralizedMeanPooling2D(keras.layers.Layer):  # type: ignore[misc]
    """Generalized-mean (GeM) pooling over the spatial axes of ``(B, H, W, C)`` features.

    ``y_c = (mean_{h,w} max(x_{h,w,c}, ε)^p)^(1/p)``: average pooling at ``p = 1``,
    tending to max pooling as ``p`` grows. With ``trainable=True`` (default) ``p``
    is learned.

    Reference: Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval with
    No Human Annotation", TPAMI 2018.

    Args:
        p: initial exponent (> 0).
        epsilon: floor applied to activations before the power.
        trainable_p: whether ``p`` is learned.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(
        self, p: float = 3.0, epsilon: float = 1e-6, trainable_p: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not p > 0:
            raise ValueError(f"Invalid value for argument `p`. Expected p > 0. Received: p={p}")
        self.initial_p = float(p)
        self.epsilon = float(epsilon)
        self.trainable_p = bool(trainable_p)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.p = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_p),
            trainable=self.trainable_p,
        )

    def call(self, inputs: Any) -> Any:
        p = ops.maximum(self.p, 1e-3)
        powered = ops.power(ops.maximum(inputs, self.epsilon), p)
        return ops.power(ops.mean(powered, axis=(1, 2)), 1.0 / p)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            {"p": self.initial_p, "epsilon": self.epsilon, "trainable_p": self.trainable_p}
        )
        return config
