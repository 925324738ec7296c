from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import datasets
from model.datasets import Dataset, load, load_image_folder, load_mnist, load_npz
from simstream.errors import DatasetError
from tests.model.conftest import MNIST_DIR
from tests.simstream.test_idx import write_idx


def test_digits_are_uint8_images_rescaled_from_0_16_with_an_8x8_spec() -> None:
    data = datasets.load_digits()
    assert data.x.shape == (1797, 8, 8, 1) and data.x.dtype == np.uint8
    assert data.x.max() == 255 and data.x.min() == 0
    assert data.input_spec.shape == (8, 8, 1) and data.num_classes == 10
    assert data.class_names == tuple("0123456789")


def test_mnist_loads_from_a_directory_of_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 28, 28)), True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 8, 9]), True)
    both = load_mnist(tmp_path)
    assert both.x.shape == (8, 28, 28, 1) and both.y.tolist() == [0, 1, 2, 3, 4, 7, 8, 9]
    assert load_mnist(tmp_path, split="test").y.tolist() == [7, 8, 9]
    assert both.input_spec.shape == (28, 28, 1)


@pytest.mark.skipif(
    not MNIST_DIR.is_dir() and os.environ.get("CI") != "true",
    reason="the shared MNIST test set is absent",
)
def test_the_shared_mnist_test_set_loads_with_its_documented_label_counts() -> None:
    data = load("mnist", mnist_dir=MNIST_DIR)
    assert len(data) == 10_000
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(data.y).tolist() == counts


def test_a_directory_without_mnist_files_names_the_files_it_expected(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*readme\.txt"):
        load_mnist(tmp_path)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, split="train")
    with pytest.raises(DatasetError, match="directory"):
        load_mnist(tmp_path / "missing")


def test_an_npz_of_images_with_string_labels_maps_labels_to_sorted_class_names(
    tmp_path: Path,
) -> None:
    x = np.zeros((3, 5, 6), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["cat", "ant", "cat"]))
    data = load(f"npz:{tmp_path / 'd.npz'}")
    assert data.class_names == ("ant", "cat") and data.y.tolist() == [1, 0, 1]
    assert data.x.shape == (3, 5, 6, 1) and data.input_spec.kind == "image"


def test_an_npz_of_vectors_gets_a_vector_spec_and_keeps_given_class_names(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "v.npz", x=np.ones((4, 3)), y=np.array([0, 1, 1, 0]), class_names=["a", "b"]
    )
    data = load_npz(tmp_path / "v.npz")
    assert data.input_spec.kind == "vector" and data.input_spec.shape == (3,)
    assert data.class_names == ("a", "b") and data.x.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 3))}, "arrays 'x' and 'y'"),
        ({"x": np.zeros((2, 3, 3)), "y": np.zeros(2, int)}, "uint8 images"),
        ({"x": np.zeros((2,)), "y": np.zeros(2, int)}, "N×D"),
        ({"x": np.zeros((2, 3)), "y": np.zeros(3, int)}, r"shape \(2,\)"),
    ],
)
def test_a_malformed_npz_is_refused(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_a_missing_npz_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Cannot read"):
        load_npz(tmp_path / "nope.npz")


def test_an_image_folder_gives_one_class_per_sub_folder_and_a_common_size(tmp_path: Path) -> None:
    for name, size, value in [("b", (10, 12), 10), ("b", (10, 12), 20), ("a", (30, 30), 30)]:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.full(size, value, np.uint8)).save(folder / f"{value}.png")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    data = load(f"folder:{tmp_path}")
    assert data.class_names == ("a", "b") and data.y.tolist() == [0, 1, 1]
    assert data.x.shape == (3, 10, 12, 1) and data.input_spec.channels == 1
    assert data.x[0].mean() == pytest.approx(30)


def test_an_image_folder_with_colour_images_is_loaded_as_rgb(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x" / "1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x" / "2.png")
    data = load_image_folder(tmp_path, image_size=(8, 8))
    assert data.x.shape == (2, 8, 8, 3)


def test_an_empty_or_broken_image_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="Cannot read image"):
        load_image_folder(tmp_path)


def test_an_unknown_identifier_lists_the_accepted_forms() -> None:
    with pytest.raises(DatasetError, match="digits, mnist, npz:PATH or folder:PATH"):
        load("cifar")


def test_a_subset_keeps_names_and_spec_and_the_summary_counts_classes(digits: Dataset) -> None:
    part = digits.subset(digits.y < 2, name="two")
    summary = part.summary()
    assert summary["name"] == "two" and summary["classes"] == 10
    assert summary["class_counts"][2:] == [0] * 8 and sum(summary["class_counts"]) == len(part)
    assert part.model_inputs().shape == (len(part), 8, 8, 1)
