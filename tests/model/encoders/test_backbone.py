"""Transfer learning: a backbone loads a local weights file and freezes what its policy says."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from model import encoders
from model.encoders.backbone import BACKBONE_LAYER, BackboneEncoder, find_weights_file
from model.inputs import InputSpec
from simstream.errors import ModelError

SPEC = InputSpec.image(32, 32, 3)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights of a headless MobileNetV3Small at 32×32, made here (nothing downloaded).

    Its batch-norm statistics are set from one batch (momentum 0), as a trained
    network's are: with the initial ones, activations vanish through the frozen
    batch norms and no gradient reaches the backbone.
    """
    keras.utils.set_random_seed(7)
    network = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    network(np.random.default_rng(7).uniform(0, 255, (16, 32, 32, 3)), training=True)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v3_small_notop.weights.h5"
    network.save_weights(path)
    return path


def _backbone(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def _build(weights: Path | None, trainable: str = "full", spec: InputSpec = SPEC) -> keras.Model:
    builder = BackboneEncoder(
        "mobilenetv3small", weights=None if weights is None else str(weights), trainable=trainable
    )
    return builder.build(spec, 8, seed=0)[0]


def test_a_backbone_loads_every_weight_of_the_file_it_is_given(weights_file: Path) -> None:
    reference = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    reference.load_weights(weights_file)
    random = _backbone(_build(None)).get_weights()

    loaded = _backbone(_build(weights_file)).get_weights()

    assert len(loaded) == len(reference.get_weights()) > 50
    for got, expected in zip(loaded, reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert any(not np.array_equal(a, b) for a, b in zip(loaded, random, strict=True))


def test_a_weights_directory_is_searched_for_the_architectures_file(
    weights_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "resnet50_notop.weights.h5").write_bytes(b"")
    (tmp_path / weights_file.name).write_bytes(weights_file.read_bytes())
    assert find_weights_file(tmp_path, "mobilenetv3small") == tmp_path / weights_file.name
    loaded = _backbone(_build(tmp_path)).get_weights()
    np.testing.assert_array_equal(loaded[0], _backbone(_build(weights_file)).get_weights()[0])


def test_a_grayscale_input_is_repeated_into_the_three_channels_the_weights_expect(
    weights_file: Path,
) -> None:
    model = _build(weights_file, spec=InputSpec.image(28, 28, 1))
    assert model.input_shape == (None, 32, 32, 1)
    assert _backbone(model).input_shape == (None, 32, 32, 3)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("missing.weights.h5", "does not exist"),
        ("empty-dir", "Cannot choose the mobilenetv3small weights"),
        ("other", "Cannot load"),
    ],
)
def test_weights_that_are_missing_or_do_not_match_are_a_clear_model_error(
    tmp_path: Path, weights: str, message: str
) -> None:
    path = tmp_path / weights
    if weights == "empty-dir":
        path.mkdir()
    if weights == "other":
        path = tmp_path / "cnn.weights.h5"
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(path)
    with pytest.raises(ModelError, match=message):
        _build(path)


def test_frozen_partial_and_full_set_the_documented_trainable_flags(weights_file: Path) -> None:
    frozen = _backbone(_build(weights_file, "frozen"))
    partial = _backbone(_build(weights_file, "partial"))
    full = _backbone(_build(weights_file, "full"))

    assert not frozen.trainable_weights and full.trainable_weights
    layers = partial.layers
    first = len(layers) - int(np.ceil(0.2 * len(layers)))
    for i, layer in enumerate(layers):
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (i >= first and not batch_norm), layer.name
    assert 0 < len(partial.trainable_weights) < len(full.trainable_weights)


@pytest.mark.parametrize("policy", ["frozen", "partial"])
def test_one_training_step_changes_only_the_trainable_weights(
    weights_file: Path, policy: str
) -> None:
    model = _build(weights_file, policy)
    backbone = _backbone(model)
    trainable = {id(v) for v in backbone.trainable_weights}
    before = [np.array(v) for v in backbone.weights]
    head_before = np.array(model.get_layer(encoders.EMBEDDING_LAYER).kernel)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    rng = np.random.default_rng(0)
    model.train_on_batch(
        rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32"),
        rng.normal(size=(4, 8)).astype("float32"),
    )

    for variable, old in zip(backbone.weights, before, strict=True):
        changed = not np.array_equal(np.array(variable), old)
        if id(variable) not in trainable:
            assert not changed, variable.path
    changed_trainable = [
        v.path
        for v, old in zip(backbone.weights, before, strict=True)
        if id(v) in trainable and not np.array_equal(np.array(v), old)
    ]
    assert bool(changed_trainable) == (policy == "partial")
    head_after = np.array(model.get_layer(encoders.EMBEDDING_LAYER).kernel)
    assert not np.array_equal(head_before, head_after)


def test_an_unknown_trainable_policy_is_refused() -> None:
    with pytest.raises(ModelError, match="trainable"):
        BackboneEncoder("mobilenetv3small", trainable="half")


def test_the_transfer_settings_round_trip_through_the_encoder_config(weights_file: Path) -> None:
    builder = BackboneEncoder("convnexttiny", weights=str(weights_file), trainable="partial")
    assert encoders.get(encoders.serialize(builder)) == builder


def test_a_file_of_a_smaller_network_is_refused_rather_than_partly_loaded(tmp_path: Path) -> None:
    path = tmp_path / "small.weights.h5"
    keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), minimalistic=True
    ).save_weights(path)
    with pytest.raises(ModelError, match="Cannot load"):
        _build(path)
