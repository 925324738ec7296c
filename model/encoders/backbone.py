"""`BackboneEncoder`: a `keras.applications` network (trained from scratch) with GeM pooling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import keras

from model.encoders.base import EncoderBuilder
from model.encoders.layers import GeneralizedMeanPooling2D
from model.inputs import InputSpec
from simstream.errors import ModelError

MIN_SIZE = 32
"""keras.applications refuse images smaller than this."""


def _architectures() -> dict[str, tuple[Callable[..., keras.Model], float]]:
    """Name → (constructor, input scale). EfficientNet rescales 0..255 inputs itself."""
    apps = keras.applications
    return {
        "efficientnetb0": (apps.EfficientNetB0, 1.0),
        "resnet50": (apps.ResNet50, 1.0 / 255.0),
    }


class BackboneEncoder(EncoderBuilder):
    """A convolutional backbone from `keras.applications`, GeM pooling, then the embedding head.

    Weights are always initialised randomly (``weights=None``): nothing is ever
    downloaded. Images smaller than 32×32 are upsampled to 32×32 by the input
    spec (the applications refuse smaller inputs).

    Args:
        architecture: ``efficientnetb0`` or ``resnet50``.
        image_size: side of the square input; ``None`` keeps the data's size
            (at least 32).
        gem_p: initial exponent of the GeM pooling.
    """

    name: ClassVar[str] = "backbone"
    kinds: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        architecture: str = "efficientnetb0",
        image_size: int | None = None,
        gem_p: float = 3.0,
    ) -> None:
        architecture = architecture.lower()
        if architecture not in _architectures():
            raise ModelError(
                f"Invalid value for argument `architecture`. Expected one of "
                f"{sorted(_architectures())}. Received: architecture={architecture!r}"
            )
        if image_size is not None and image_size < MIN_SIZE:
            raise ModelError(
                f"Invalid value for argument `image_size`. Expected ≥ {MIN_SIZE}. "
                f"Received: image_size={image_size}"
            )
        self.architecture = architecture
        self.image_size = image_size
        self.gem_p = float(gem_p)

    def input_spec(self, data_spec: InputSpec) -> InputSpec:
        height, width, _ = data_spec.shape
        if self.image_size is not None:
            height = width = self.image_size
        spec = data_spec.with_image_size(max(height, MIN_SIZE), max(width, MIN_SIZE))
        return replace(spec, scale=_architectures()[self.architecture][1], offset=0.0)

    def features(self, inputs: Any, spec: InputSpec) -> Any:
        constructor, _ = _architectures()[self.architecture]
        backbone = constructor(include_top=False, weights=None, input_shape=spec.shape)
        return GeneralizedMeanPooling2D(p=self.gem_p, name="gem_pool")(backbone(inputs))

    def get_config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "image_size": self.image_size,
            "gem_p": self.gem_p,
        }
