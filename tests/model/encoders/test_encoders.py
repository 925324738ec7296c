from __future__ import annotations

import keras
import numpy as np
import pytest

from model import encoders
from model.encoders import BackboneEncoder, CNNEncoder, MLPEncoder
from model.inputs import InputSpec
from simstream.errors import ModelError


@pytest.mark.parametrize(
    ("identifier", "spec"),
    [
        ("cnn", InputSpec.image(8, 8, 1)),
        (
            {"name": "cnn", "filters": [8, 16], "pooling": "flatten", "hidden": 8},
            InputSpec.image(28, 28, 1),
        ),
        (
            {"name": "cnn", "filters": [8], "pooling": "avg", "batch_norm": False},
            InputSpec.image(8, 8, 3),
        ),
        ("mlp", InputSpec.vector(12)),
        (
            {"name": "mlp", "hidden": [16], "layer_norm": True, "dropout": 0.1},
            InputSpec.image(8, 8, 1),
        ),
    ],
)
def test_each_encoder_builds_and_embeds_into_unit_norm_vectors(
    identifier: str | dict[str, object], spec: InputSpec
) -> None:
    model, model_spec = encoders.build(identifier, spec, embedding_dim=7, seed=0)
    x = np.random.default_rng(0).random((3, *model_spec.shape)).astype(np.float32)
    out = np.asarray(model(x))
    assert out.shape == (3, 7)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert model.layers[-1].name == encoders.NORMALIZATION_LAYER
    assert isinstance(model.layers[-1], encoders.L2Normalization)


def test_a_backbone_upsamples_small_images_to_32_and_never_loads_weights() -> None:
    model, spec = BackboneEncoder("efficientnetb0").build(InputSpec.image(28, 28, 1), 8, seed=0)
    assert spec.shape == (32, 32, 1) and spec.scale == 1.0
    out = np.asarray(model(np.zeros((2, 32, 32, 1), np.float32)))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert any(isinstance(layer, encoders.GeneralizedMeanPooling2D) for layer in model.layers)


def test_a_resnet_backbone_takes_the_requested_image_size_scaled_to_the_unit_interval() -> None:
    spec = BackboneEncoder("resnet50", image_size=48).input_spec(InputSpec.image(28, 28, 3))
    assert spec.shape == (48, 48, 3) and spec.scale == pytest.approx(1 / 255)


def test_l2_normalization_leaves_zero_vectors_at_zero() -> None:
    out = np.asarray(encoders.L2Normalization()(np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)))
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.6, 0.8]], rtol=1e-6)


def test_gem_pooling_with_p_one_is_average_pooling_and_grows_towards_max() -> None:
    # Features 1 and 3 in one channel: mean = 2; p=3 gives ((1 + 27) / 2)^(1/3) = 14^(1/3).
    x = np.array([1.0, 3.0], np.float32).reshape(1, 1, 2, 1)
    average = encoders.GeneralizedMeanPooling2D(p=1.0)(x)
    cubic = encoders.GeneralizedMeanPooling2D(p=3.0)(x)
    np.testing.assert_allclose(np.asarray(average), [[2.0]], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cubic), [[14 ** (1 / 3)]], rtol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        encoders.L2Normalization(axis=1, epsilon=1e-9),
        encoders.GeneralizedMeanPooling2D(p=2.5, trainable_p=False),
    ],
)
def test_the_custom_layers_serialize_and_deserialize_in_safe_mode(
    layer: keras.layers.Layer,
) -> None:
    config = keras.saving.serialize_keras_object(layer)
    again = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "builder",
    [
        CNNEncoder(filters=(4, 8), pooling="max", hidden=3),
        MLPEncoder(hidden=(5,)),
        BackboneEncoder("resnet50", image_size=40, gem_p=2.0),
    ],
)
def test_get_round_trips_every_builder_through_its_config(builder: encoders.EncoderBuilder) -> None:
    assert encoders.get(encoders.serialize(builder)) == builder
    assert encoders.get(builder) is builder
    assert encoders.get(builder.name) == type(builder)()


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        ("transformer", "Unknown encoder"),
        ({"name": "cnn", "pooling": "median"}, "pooling"),
        ({"name": "cnn", "kernel": 5}, "Invalid config"),
        ({"name": "backbone", "architecture": "vgg16"}, "architecture"),
        ({"name": "backbone", "image_size": 16}, "image_size"),
        (42, "Expected a name"),
    ],
)
def test_an_unknown_or_invalid_encoder_is_a_model_error(identifier: object, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        encoders.get(identifier)  # type: ignore[arg-type]


def test_a_cnn_refuses_vector_inputs_and_a_zero_embedding_size() -> None:
    with pytest.raises(ModelError, match="cannot take vector inputs"):
        encoders.build("cnn", InputSpec.vector(4), 8)
    with pytest.raises(ModelError, match="embedding_dim"):
        encoders.build("mlp", InputSpec.vector(4), 0)
