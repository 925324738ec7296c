from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import model.training as training
from model.datasets import Dataset
from model.inputs import InputSpec
from model.synthetic_classes import with_synthetic_classes
from model.training import TrainConfig, train
from simstream.errors import ModelError
from tests.model.conftest import FAST


def _corner_images(height: int = 4, width: int = 4) -> Dataset:
    """Two classes of one image each: one lit pixel at (0, 1) (class 0), at (0, 0) (class 1)."""
    x = np.zeros((2, height, width, 1), dtype=np.uint8)
    x[0, 0, 1, 0] = 255
    x[1, 0, 0, 0] = 255
    spec = InputSpec(kind="image", shape=(height, width, 1))
    return Dataset(x, np.array([0, 1]), ("a", "b"), spec, "corners")


def _lit(image: np.ndarray) -> tuple[int, int]:
    row, column = np.argwhere(image[..., 0] == 255)[0]
    return int(row), int(column)


def test_each_transform_moves_a_pixel_where_its_name_says_and_labels_a_new_class() -> None:
    data = _corner_images()
    names = ["rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "antitranspose"]
    expanded = with_synthetic_classes(data, names)
    assert len(expanded) == 16 and expanded.num_classes == 16
    # The originals come first; the i-th transform's copy of class c is class c + 2i.
    np.testing.assert_array_equal(expanded.x[:2], data.x)
    assert expanded.y.tolist() == list(range(16))
    assert expanded.class_names[2:4] == ("a/rot90", "b/rot90")
    # Class 0's pixel, at row 0, column 1 of a 4×4 image, lands on eight distinct places.
    lit = {expanded.class_names[label]: _lit(image) for image, label in
           zip(expanded.x, expanded.y, strict=True) if label % 2 == 0}  # fmt: skip
    assert lit == {
        "a": (0, 1),
        "a/rot90": (2, 0),  # counter-clockwise: the top row becomes the left column
        "a/rot180": (3, 2),
        "a/rot270": (1, 3),
        "a/hflip": (0, 2),
        "a/vflip": (3, 1),
        "a/transpose": (1, 0),
        "a/antitranspose": (2, 3),
    }


def test_no_transform_leaves_the_dataset_as_it_is() -> None:
    data = _corner_images()
    assert with_synthetic_classes(data, []) is data


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["rot45"], "Expected distinct names from"),
        (["hflip", "hflip"], "Expected distinct names from"),
    ],
)
def test_unknown_or_repeated_transforms_are_refused_when_configured(
    names: list[str], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        TrainConfig(synthetic_classes=tuple(names))


def test_vectors_and_quarter_turns_of_oblong_images_are_refused(digits: Dataset) -> None:
    vectors = Dataset(
        np.zeros((4, 3), dtype=np.float32), np.array([0, 0, 1, 1]), ("a", "b"),
        InputSpec(kind="vector", shape=(3,)), "vectors",
    )  # fmt: skip
    with pytest.raises(ModelError, match="Expected images"):
        with_synthetic_classes(vectors, ["hflip"])
    oblong = _corner_images(4, 6)
    with pytest.raises(ModelError, match=r"Expected square images for \['rot90'\]"):
        with_synthetic_classes(oblong, ["hflip", "rot90"])
    assert len(with_synthetic_classes(oblong, ["hflip", "rot180"])) == 6


def test_training_samples_the_synthetic_classes_but_counts_an_epoch_in_real_examples(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled: list[np.ndarray] = []

    class Recording(training.ClassBalancedSampler):
        def __init__(self, x: np.ndarray, y: np.ndarray, **kwargs: object) -> None:
            super().__init__(x, y, **kwargs)  # type: ignore[arg-type]
            sampled.append(np.asarray(y))

    monkeypatch.setattr(training, "ClassBalancedSampler", Recording)
    config = replace(
        FAST, epochs=1, steps_per_epoch=None, synthetic_classes=("rot90", "hflip"),
        validation_split=0.2, patience=1,
    )  # fmt: skip
    result = train(digits, config)
    [labels] = sampled
    validation_classes = result.validation["classes"]  # type: ignore[index]
    trained_classes = sorted(set(range(10)) - set(validation_classes))
    # Validation holds out real classes; the rest train with their two copies.
    assert sorted(np.unique(labels).tolist()) == [
        c + 10 * i for i in range(3) for c in trained_classes
    ]
    real = int(np.sum(np.isin(digits.y, trained_classes)))
    batch = FAST.classes_per_batch * FAST.examples_per_class
    assert len(labels) == 3 * real
    assert result.train_images == (real // batch) * batch
    assert (result.dataset["classes"], result.dataset["examples"]) == (10, real)
    # The config survives the registry's JSON.
    assert TrainConfig(**json.loads(json.dumps(result.config.to_dict()))) == result.config
