from __future__ import annotations

import pytest

from simstream.errors import IndexStoreError
from workers.index.filter import Filter, json_equal


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (1, "1", False),
        (True, 1, False),
        (None, None, True),
        (None, 0, False),
        ([1, "a"], [1, "a"], True),
        ([1, 2], [2, 1], False),
        ({"x": [1]}, {"x": [1.0]}, True),
        ({"x": 1}, {"x": 1, "y": 2}, False),
    ],
)
def test_json_equal_compares_type_and_value(a: object, b: object, equal: bool) -> None:
    assert json_equal(a, b) is equal


def test_an_item_passes_when_its_label_is_allowed_and_every_metadata_pair_holds() -> None:
    f = Filter.of(labels=[3, "cat"], color="red", size=2)
    assert f.matches(3, {"color": "red", "size": 2.0, "extra": 1})
    assert f.matches("cat", {"color": "red", "size": 2})
    assert not f.matches(4, {"color": "red", "size": 2})
    assert not f.matches(3, {"color": "red"})
    assert not f.matches(True, {"color": "red", "size": 2})


def test_an_empty_filter_passes_everything() -> None:
    f = Filter()
    assert f.empty
    assert f.matches(None, {})


def test_a_single_label_can_be_given_without_a_list() -> None:
    assert Filter.of(labels=7).labels == frozenset({7})


def test_equal_filters_have_equal_cache_keys() -> None:
    assert (
        Filter.of(labels=[2, 1], a=1, b="x").cache_key()
        == Filter.of(labels=[1, 2], b="x", a=1).cache_key()
    )


def test_labels_must_be_strings_or_numbers() -> None:
    with pytest.raises(IndexStoreError, match="Expected strings or integers"):
        Filter(labels=frozenset({None}))  # type: ignore[arg-type]
