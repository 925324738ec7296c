"""Source watermarks: contiguous prefixes of completed ranges."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.node.watermark import SourceWatermark


def test_ranges_completed_out_of_order_advance_the_watermark_once_contiguous() -> None:
    mark = SourceWatermark()
    mark.mark(10, 20)
    assert mark.next == 0 and not mark.covers(10)
    mark.mark(0, 10)
    assert mark.next == 20 and mark.covers(19) and not mark.covers(20)


def test_a_repeated_or_overlapping_range_changes_nothing_it_should_not() -> None:
    mark = SourceWatermark()
    mark.mark(0, 5)
    mark.mark(0, 5)
    mark.mark(3, 8)
    assert mark.next == 8 and mark.pending == []


@given(st.lists(st.integers(1, 7), min_size=1, max_size=30), st.randoms())
def test_any_order_of_a_tiling_ends_at_its_total_length(sizes: list[int], rnd) -> None:
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    rnd.shuffle(bounds)
    mark = SourceWatermark()
    for s, e in bounds:
        mark.mark(s, e)
    restored = SourceWatermark.from_dict(mark.to_dict())
    assert restored.next == start and restored.pending == []


def test_a_dead_lettered_range_counts_as_accounted_for_and_is_remembered_until_replayed() -> None:
    mark = SourceWatermark()
    mark.mark(0, 10)
    mark.mark(10, 20, dead_lettered=True)
    mark.mark(10, 20, dead_lettered=True)
    assert mark.next == 20 and mark.failed == [(10, 20)]
    restored = SourceWatermark.from_dict(mark.to_dict())
    assert restored.failed == [(10, 20)] and restored.next == 20
    restored.mark(0, 15)
    assert restored.failed == [(10, 20)]
    restored.mark(5, 25)
    assert restored.failed == [] and restored.next == 25
