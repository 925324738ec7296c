"""`BackboneEncoder`: a `keras.applications` network with GeM pooling, from scratch or transferred.

Nothing is ever downloaded: the network is built with ``weights=None`` and, for
transfer learning, its weights are loaded from a file the user supplies
(`load_backbone_weights`). Which of its layers then train is the
`TRAINABLE` policy (`set_trainable`):

- ``full``: every layer trains (the default; training from scratch);
- ``frozen``: no backbone layer trains, only GeM pooling and the embedding head;
- ``partial``: the last `PARTIAL_SHARE` (20 %, at least one) of the backbone's
  layers train, except ``BatchNormalization`` layers, which stay frozen (in
  inference mode, so small metric-learning batches cannot disturb the
  statistics learnt on the large data set).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import keras

from model.encoders.base import EncoderBuilder
from model.encoders.layers import GeneralizedMeanPooling2D
from model.inputs import InputSpec
from simstream.errors import ModelError

MIN_SIZE = 32
"""keras.applications refuse images smaller than this."""

BACKBONE_LAYER = "backbone"
"""Name of the nested `keras.applications` model inside the encoder."""

TRAINABLE = ("frozen", "partial", "full")
"""How much of the backbone trains (see the module docstring)."""

PARTIAL_SHARE = 0.2
"""Share of the backbone's last layers that train under ``trainable="partial"``."""

WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")
"""Files a weights directory is searched for."""

#: ImageNet's RGB mean of the ``caffe`` preprocessing of pretrained ResNet50 weights.
_CAFFE_MEAN = (123.68 + 116.779 + 103.939) / 3


def _architectures() -> dict[str, tuple[Callable[..., keras.Model], float]]:
    """Name → (constructor, input scale). All but ResNet50 rescale 0..255 inputs themselves."""
    apps = keras.applications
    return {
        "resnet50": (apps.ResNet50, 1.0 / 255.0),
        "efficientnetb0": (apps.EfficientNetB0, 1.0),
        "efficientnetb1": (apps.EfficientNetB1, 1.0),
        "efficientnetb2": (apps.EfficientNetB2, 1.0),
        "efficientnetb3": (apps.EfficientNetB3, 1.0),
        "mobilenetv3small": (apps.MobileNetV3Small, 1.0),
        "mobilenetv3large": (apps.MobileNetV3Large, 1.0),
        "convnexttiny": (apps.ConvNeXtTiny, 1.0),
    }


class BackboneEncoder(EncoderBuilder):
    """A convolutional backbone from `keras.applications`, GeM pooling, then the embedding head.

    Images smaller than 32×32 are upsampled to 32×32 by the input spec (the
    applications refuse smaller inputs). With ``weights``, a grayscale input is
    repeated into three channels inside the model (pretrained networks take
    RGB), and ResNet50 takes 0..255 inputs centred on ImageNet's mean (its
    pretrained weights' ``caffe`` preprocessing, without swapping to BGR).

    Args:
        architecture: one of ``resnet50``, ``efficientnetb0`` … ``efficientnetb3``,
            ``mobilenetv3small``, ``mobilenetv3large``, ``convnexttiny``.
        image_size: side of the square input; ``None`` keeps the data's size
            (at least 32).
        gem_p: initial exponent of the GeM pooling.
        weights: a weights file of the headless network (``include_top=False``;
            ``.weights.h5`` or Keras' ``.h5``), or a directory holding one (see
            `find_weights_file`); ``None``: random initialisation.
        trainable: ``full``, ``partial`` or ``frozen`` (see `set_trainable`).
    """

    name: ClassVar[str] = "backbone"
    kinds: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        architecture: str = "efficientnetb0",
        image_size: int | None = None,
        gem_p: float = 3.0,
        weights: str | None = None,
        trainable: str = "full",
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
        if trainable not in TRAINABLE:
            raise ModelError(
                f"Invalid value for argument `trainable`. Expected one of {list(TRAINABLE)}. "
                f"Received: trainable={trainable!r}"
            )
        self.architecture = architecture
        self.image_size = image_size
        self.gem_p = float(gem_p)
        self.weights = None if weights is None else str(weights)
        self.trainable = trainable

    def input_spec(self, data_spec: InputSpec) -> InputSpec:
        height, width, _ = data_spec.shape
        if self.image_size is not None:
            height = width = self.image_size
        spec = data_spec.with_image_size(max(height, MIN_SIZE), max(width, MIN_SIZE))
        scale, offset = _architectures()[self.architecture][1], 0.0
        if self.weights is not None and self.architecture == "resnet50":
            scale, offset = 1.0, -_CAFFE_MEAN
        return replace(spec, scale=scale, offset=offset)

    def features(self, inputs: Any, spec: InputSpec) -> Any:
        constructor, _ = _architectures()[self.architecture]
        height, width, channels = spec.shape
        if self.weights is not None and channels == 1:
            inputs = keras.layers.Concatenate(name="gray_to_rgb")([inputs] * 3)
            channels = 3
        backbone = constructor(
            include_top=False,
            weights=None,
            input_shape=(height, width, channels),
            name=BACKBONE_LAYER,
        )
        if self.weights is not None:
            load_backbone_weights(backbone, self.weights, self.architecture)
        set_trainable(backbone, self.trainable)
        return GeneralizedMeanPooling2D(p=self.gem_p, name="gem_pool")(backbone(inputs))

    def get_config(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "image_size": self.image_size,
            "gem_p": self.gem_p,
            "weights": self.weights,
            "trainable": self.trainable,
        }


def set_trainable(backbone: keras.Model, policy: str) -> None:
    """Apply a `TRAINABLE` policy to ``backbone``'s layers (in place).

    ``partial`` lets the last ``ceil(PARTIAL_SHARE × layers)`` layers (at least
    one) train, ``BatchNormalization`` layers excepted.

    Raises:
        ModelError: for an unknown policy.
    """
    if policy not in TRAINABLE:
        raise ModelError(
            f"Invalid trainable policy. Expected one of {list(TRAINABLE)}. Received: {policy!r}"
        )
    backbone.trainable = policy != "frozen"
    if policy != "partial":
        return
    layers = backbone.layers
    first = len(layers) - max(1, math.ceil(PARTIAL_SHARE * len(layers)))
    for i, layer in enumerate(layers):
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= first and not batch_norm


def find_weights_file(path: Path | str, architecture: str) -> Path:
    """The weights file at ``path``: that file, or the one for ``architecture`` in a directory.

    A directory must hold exactly one file ending in one of `WEIGHT_SUFFIXES`,
    or exactly one whose name, letters and digits only, contains the
    architecture's name (``weights_mobilenet_v3_small_…_no_top.h5`` matches
    ``mobilenetv3small``).

    Raises:
        ModelError: when the path does not exist or no single file matches.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelError(
            f"Invalid value for argument `weights`. Expected a weights file or a directory "
            f"holding one. Received: {str(path)!r}, which does not exist"
        )
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(files) == 1:
        return files[0]
    named = [p for p in files if architecture in re.sub(r"[^a-z0-9]", "", p.name.lower())]
    if len(named) == 1:
        return named[0]
    raise ModelError(
        f"Cannot choose the {architecture} weights in {str(path)!r}. Expected one weights file "
        f"({', '.join(WEIGHT_SUFFIXES)}), or one whose name holds {architecture!r}. "
        f"Received: {[p.name for p in files] or 'none'}"
    )


def load_backbone_weights(backbone: keras.Model, path: Path | str, architecture: str) -> Path:
    """Load the weights file at ``path`` (see `find_weights_file`) into ``backbone``.

    Returns:
        The file loaded.

    Raises:
        ModelError: when no file is found or it does not match the network
            (another architecture, a network with its classification top, other
            input channels).
    """
    file = find_weights_file(path, architecture)
    try:
        # Keras only warns when a file lacks some of the network's layers: refuse that too.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backbone.load_weights(file)
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)]
        if skipped:
            raise ValueError(f"{len(skipped)} parts not found in the file, e.g. {skipped[0]}")
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise ModelError(
            f"Cannot load {str(file)!r} into {architecture} (include_top=False, input "
            f"{tuple(backbone.input_shape[1:])}). Expected the weights of that headless "
            f"network. Received: {type(e).__name__}: {str(e)[:300]}"
        ) from None
    return file
