"""Sources: every input format yields valid items and skips bad entries with a reason."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from producers.sources import (
    DigitsSource,
    ImageFolderSource,
    JsonLinesSource,
    MnistSource,
    NumpySource,
)
from simstream.errors import DatasetError
from simstream.wire import ArrayPayload, ImagePayload, ItemEvent, Op, VectorPayload


def _save_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((5, 6), value, np.uint8)).save(path)


def test_an_image_folder_yields_one_item_per_image_labelled_by_sub_folder(tmp_path: Path) -> None:
    _save_png(tmp_path / "cat" / "a.png", 10)
    _save_png(tmp_path / "dog" / "b.PNG", 20)
    _save_png(tmp_path / "loose.png", 30)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    source = ImageFolderSource(tmp_path)

    items = list(source)

    assert [(i.id, i.label) for i in items] == [
        ("cat/a.png", "cat"),
        ("dog/b.PNG", "dog"),
        ("loose.png", None),
    ]
    assert isinstance(items[0].payload, ImagePayload)
    assert items[0].payload.to_array().tolist() == np.full((5, 6), 10).tolist()
    assert source.skipped.count == 1
    assert source.skipped.reasons[0].startswith("dog/broken.jpg: ")
    assert source.size_hint() == 4


def test_a_missing_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Expected a folder"):
        ImageFolderSource(tmp_path / "nope")


def test_an_npz_file_yields_arrays_with_labels_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    x = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    np.savez(path, x=x, y=np.array([1, 2, 3]), ids=np.array(["a", "b", "c"]))

    items = list(NumpySource(path))

    assert [(i.id, i.label) for i in items] == [("a", "1"), ("b", "2"), ("c", "3")]
    assert isinstance(items[2].payload, ArrayPayload)
    np.testing.assert_array_equal(items[2].payload.to_array(), x[2])


def test_an_npy_file_yields_arrays_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vectors.npy"
    np.save(path, np.ones((2, 3), dtype=np.int64))

    items = list(NumpySource(path))

    assert [i.id for i in items] == ["vectors/0", "vectors/1"]
    assert isinstance(items[0].payload, ArrayPayload)
    assert items[0].payload.dtype == "int32"
    assert items[0].label is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.zeros(2)}, "named 'x'"),
        ({"x": np.zeros(3)}, "at least 2 axes"),
        ({"x": np.zeros((2, 2)), "y": np.zeros(3)}, "y of length 2"),
        ({"x": np.full((2, 2), 2**40)}, "Unsupported dtype"),
        ({"x": np.zeros((2, 2), np.complex64)}, "Unsupported dtype"),
    ],
    ids=["no x", "a 1-d x", "labels of another length", "int64 beyond int32", "complex values"],
)
def test_an_unusable_npz_file_is_a_dataset_error(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=message):
        NumpySource(path)


def test_an_npz_file_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([[{"a": 1}]], dtype=object))
    with pytest.raises(DatasetError):
        list(NumpySource(path))


def test_json_lines_yield_every_payload_kind_and_deletes(tmp_path: Path) -> None:
    _save_png(tmp_path / "img" / "one.png", 7)
    lines = [
        {"id": "v", "label": "x", "metadata": {"k": 1}, "payload": {"vector": [1, 2.5]}},
        {"id": "i", "label": 3, "payload": {"image_path": "img/one.png"}},
        {"id": "a", "payload": {"array": [[1, 2], [3, 4]], "dtype": "uint8"}},
        {"id": "f", "payload": {"array": [0.5, 1.5]}},
        {"id": "gone", "op": "delete"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    source = JsonLinesSource(path)

    items = {item.id: item for item in source}

    assert source.skipped.count == 0
    assert isinstance(items["v"].payload, VectorPayload)
    assert items["v"].payload.to_array().tolist() == [1.0, 2.5]
    assert items["v"].metadata == {"k": 1}
    assert isinstance(items["i"].payload, ImagePayload)
    assert items["i"].label == "3"
    assert isinstance(items["a"].payload, ArrayPayload)
    assert items["a"].payload.to_array().tolist() == [[1, 2], [3, 4]]
    assert items["a"].payload.dtype == "uint8"
    assert isinstance(items["f"].payload, ArrayPayload)
    assert items["f"].payload.dtype == "float32"
    assert items["gone"].op is Op.DELETE
    assert items["gone"].payload is None
    assert isinstance(items["gone"].to_event("p/"), ItemEvent)
    assert items["gone"].to_event("p/").id == "p/gone"


def test_bad_json_lines_are_skipped_with_their_line_numbers(tmp_path: Path) -> None:
    lines = [
        '{"id": "ok", "payload": {"vector": [1]}}',
        "{not json",
        '["a list"]',
        '{"id": 5, "payload": {"vector": [1]}}',
        '{"id": "x", "op": "merge"}',
        '{"id": "x", "payload": {"vector": [NaN]}}',
        '{"id": "x", "payload": {"image_path": "missing.png"}}',
        '{"id": "x", "payload": {"array": [300], "dtype": "uint8"}}',
        '{"id": "x", "payload": {"array": [1.5], "dtype": "int16"}}',
        '{"id": "x", "payload": {"array": [[1], [1, 2]]}}',
        '{"id": "x", "payload": {"array": [1], "dtype": "int64"}}',
        '{"id": "x", "payload": {"sound": [1]}}',
        '{"id": "x"}',
        '{"id": "x", "lable": "typo", "payload": {"vector": [1]}}',
        '{"id": "x", "metadata": {"nested": {"a": 1}}, "payload": {"vector": [1]}}',
        '{"id": "x", "label": [1], "payload": {"vector": [1]}}',
        '{"id": "ok2", "op": "delete"}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines))
    source = JsonLinesSource(path)

    items = list(source)

    assert [item.id for item in items] == ["ok", "ok2"]
    assert source.skipped.count == len(lines) - 2
    assert len(source.skipped.reasons) == 5
    assert source.skipped.reasons[0].startswith("line 2: ")
    assert source.skipped.reasons[3].startswith("line 5: Expected 'op'")


def test_digits_are_1797_uint8_arrays_scaled_to_0_255() -> None:
    items = list(DigitsSource())

    assert len(items) == 1797
    first = items[0]
    assert first.id == "digits/0"
    assert first.label == "0"
    assert first.metadata == {"dataset": "digits", "index": 0}
    assert isinstance(first.payload, ArrayPayload)
    pixels = np.stack([i.payload.to_array() for i in items if i.payload is not None])
    assert pixels.shape == (1797, 8, 8)
    assert pixels.dtype == np.uint8
    assert (pixels.min(), pixels.max()) == (0, 255)


def test_mnist_reads_gzipped_idx_files(mnist_dir: Path) -> None:
    source = MnistSource(mnist_dir)

    first = next(iter(source))

    assert source.size_hint() == 10_000
    assert first.id == "mnist/t10k/0"
    assert first.label == "7"  # the first test digit of MNIST is a 7
    assert isinstance(first.payload, ArrayPayload)
    assert first.payload.shape == (28, 28)
    assert first.payload.dtype == "uint8"


def test_mnist_reads_plain_idx_files_too(mnist_dir: Path, tmp_path: Path) -> None:
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{name}.gz") as packed, (tmp_path / name).open("wb") as plain:
            shutil.copyfileobj(packed, plain)

    plain_items = list(MnistSource(tmp_path))
    packed_first = next(iter(MnistSource(mnist_dir)))

    assert len(plain_items) == 10_000
    assert plain_items[0] == packed_first


def test_a_folder_without_mnist_files_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        MnistSource(tmp_path)
