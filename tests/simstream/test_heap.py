"""`settle` collects the garbage first, then takes every survivor out of later full passes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from simstream.heap import FULL_EVERY_S, MIN_RECORDS, due, full_due, settle


class _Item:
    other: _Item | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test starts and ends with nothing frozen."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_collects_cycles_then_freezes_the_survivors(unfrozen: None) -> None:
    a, b = _Item(), _Item()
    a.other, b.other = b, a
    garbage = weakref.ref(a)
    del a, b
    kept = [_Item() for _ in range(1000)]

    settle("test")

    assert garbage() is None, "the unreachable cycle was frozen instead of collected"
    assert gc.get_freeze_count() >= len(kept)
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(item) in tracked for item in kept), "a survivor is still in a generation"


def test_a_cycle_that_became_garbage_while_frozen_is_collected_at_the_next_settle(
    unfrozen: None,
) -> None:
    a, b = _Item(), _Item()
    a.other, b.other = b, a
    settle("first")  # a and b are alive: frozen
    garbage = weakref.ref(a)
    del a, b
    gc.collect()
    assert garbage() is not None, "a full pass walked the frozen objects"

    settle("second")

    assert garbage() is None


def test_a_settle_is_due_once_a_quarter_of_the_index_is_new() -> None:
    assert not due(MIN_RECORDS - 1, 0)
    assert due(MIN_RECORDS, 0)
    assert not due(24_999, 100_000)
    assert due(25_000, 100_000)


def test_a_light_settle_freezes_new_survivors_without_walking_the_frozen_objects(
    unfrozen: None,
) -> None:
    a, b = _Item(), _Item()
    a.other, b.other = b, a
    settle("first")
    frozen_cycle = weakref.ref(a)
    del a, b  # garbage, but frozen
    kept = [_Item() for _ in range(1000)]
    frozen_before = gc.get_freeze_count()

    settle("light", full=False)

    assert frozen_cycle() is not None, "a light settle walked the frozen objects"
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(item) in tracked for item in kept), "a new survivor is not frozen"
    settle("full")
    assert frozen_cycle() is None, "the next full settle collects it"


def test_a_serving_node_settles_fully_only_hourly() -> None:
    assert full_due(serving=False, last_full=0.0, now=1.0)
    assert not full_due(serving=True, last_full=0.0, now=FULL_EVERY_S - 1)
    assert full_due(serving=True, last_full=0.0, now=FULL_EVERY_S)
    assert full_due(serving=True, last_full=-float("inf"), now=0.0)
