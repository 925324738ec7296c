from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.inputs import InputSpec
from simstream.errors import ModelError, PayloadError


def test_an_image_of_the_right_size_is_only_scaled_to_the_unit_interval() -> None:
    spec = InputSpec.image(2, 2, 1)
    out = spec.to_model_input(np.array([[0, 255], [51, 102]], np.uint8))
    assert out.shape == (2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)


def test_an_image_of_another_size_is_resized_to_the_spec() -> None:
    spec = InputSpec.image(28, 28, 1)
    out = spec.to_model_input(np.full((64, 40), 255, np.uint8))
    assert out.shape == (28, 28, 1)
    np.testing.assert_allclose(out, 1.0)


def test_a_colour_image_is_made_grey_and_a_grey_image_colour_as_the_spec_asks() -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    grey = InputSpec.image(4, 4, 1).to_model_input(red)
    # Pillow's luma: L = R·299/1000 → 76 for pure red.
    np.testing.assert_allclose(grey, 76 / 255, rtol=1e-6)
    colour = InputSpec.image(4, 4, 3).to_model_input(np.full((4, 4), 128, np.uint8))
    assert colour.shape == (4, 4, 3)
    np.testing.assert_allclose(colour, 128 / 255, rtol=1e-6)


def test_an_rgba_image_drops_its_alpha_channel() -> None:
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 1] = 255
    out = InputSpec.image(3, 3, 3).to_model_input(rgba)
    np.testing.assert_allclose(out[..., 1], 1.0)
    np.testing.assert_allclose(out[..., [0, 2]], 0.0)


def test_a_single_channel_axis_is_accepted_on_images() -> None:
    out = InputSpec.image(2, 2, 1).to_model_input(np.zeros((2, 2, 1), np.uint8))
    assert out.shape == (2, 2, 1)


def test_a_vector_is_scaled_and_offset() -> None:
    spec = InputSpec.vector(3, scale=2.0, offset=-1.0)
    np.testing.assert_allclose(spec.to_model_input([0.0, 0.5, 1.0]), [-1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("spec", "payload", "message"),
    [
        (InputSpec.image(8, 8, 1), np.zeros((8, 8), np.float32), "uint8"),
        (InputSpec.image(8, 8, 1), np.zeros((8, 8, 2), np.uint8), "H×W×C"),
        (InputSpec.image(8, 8, 1), np.zeros(8, np.uint8), "H×W×C"),
        (InputSpec.vector(3), np.zeros(4), r"shape \(3,\)"),
        (InputSpec.vector(3), np.array([0.0, np.nan, 1.0]), "finite"),
        (InputSpec.vector(2, value_range=(0.0, 1.0)), np.array([0.0, 2.0]), r"\[0.0, 1.0\]"),
        (InputSpec.vector(2), np.array(["a", "b"]), "numbers"),
    ],
)
def test_a_payload_that_cannot_become_a_model_input_is_a_payload_error(
    spec: InputSpec, payload: np.ndarray, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        spec.to_model_input(payload)


def test_a_batch_of_right_sized_images_converts_like_each_image() -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    spec = InputSpec.image(6, 6, 1)
    fast = spec.to_model_batch(batch)
    slow = np.stack([spec.to_model_input(image) for image in batch])
    np.testing.assert_array_equal(fast, slow)


def test_a_list_of_images_of_different_sizes_converts_to_one_batch() -> None:
    spec = InputSpec.image(8, 8, 1)
    out = spec.to_model_batch([np.zeros((8, 8), np.uint8), np.zeros((20, 10), np.uint8)])
    assert out.shape == (2, 8, 8, 1)
    assert spec.to_model_batch([]).shape == (0, 8, 8, 1)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["image", "vector"]),
    a=st.integers(1, 64),
    b=st.integers(1, 64),
    channels=st.sampled_from([1, 3]),
    scale=st.floats(1e-4, 10),
    offset=st.floats(-5, 5),
)
def test_a_spec_survives_a_json_round_trip(
    kind: str, a: int, b: int, channels: int, scale: float, offset: float
) -> None:
    if kind == "image":
        spec = InputSpec(kind="image", shape=(a, b, channels), scale=scale, offset=offset)
    else:
        spec = InputSpec.vector(a, scale=scale, offset=offset)
    again = InputSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_the_saved_dict_names_kind_shape_dtype_scaling_and_channels() -> None:
    data = InputSpec.image(28, 28, 1).to_dict()
    assert data["kind"] == "image" and data["shape"] == [28, 28, 1]
    assert data["dtype"] == "float32" and data["channels"] == 1
    assert data["scale"] == pytest.approx(1 / 255) and data["value_range"] == [0.0, 255.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "audio", "shape": (3,)},
        {"kind": "image", "shape": (8, 8)},
        {"kind": "image", "shape": (8, 8, 2)},
        {"kind": "vector", "shape": (0,)},
        {"kind": "vector", "shape": (3,), "resample": "cubic"},
        {"kind": "vector", "shape": (3,), "value_range": (1.0, 0.0)},
    ],
)
def test_an_invalid_spec_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        InputSpec(**kwargs)  # type: ignore[arg-type]


def test_a_dict_without_kind_or_shape_is_refused() -> None:
    with pytest.raises(ModelError, match="Invalid input spec"):
        InputSpec.from_dict({"shape": [3]})
