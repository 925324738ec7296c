"""`Postings`: the live ids of each label and of each metadata ``key: value``.

A filtered search asks them which items can pass a filter before it touches
the graph: each constraint of a `Filter` (its labels; each metadata pair) names
a posting list, and the shortest one is a superset of the items that pass. When
it is short (``IndexConfig.exact_filter_limit``) the search scans exactly those
items; otherwise its length estimates the filter's selectivity for the graph
search (see ``docs/index.md``, "Filters").

Metadata values are keyed by their JSON value (`value_key`), consistently with
`workers.index.filter.json_equal`: two values that are JSON-equal have equal
keys (``1`` and ``1.0`` share one list; ``1``, ``"1"`` and ``true`` do not). A
key some item holds a value of another type for (not JSON) is never used to
narrow a search. The shard keeps the postings under its apply mutex and
rebuilds them from its entries when it is restored from a snapshot.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator, Mapping
from typing import Any

from workers.index.filter import Filter, ItemLabel, LabelKey, label_key

_Posting = str | set[str]
"""The ids of one posting list: a bare id while it holds one (most metadata values are
unique to an item), else a set."""


def value_key(value: Any) -> Hashable | None:
    """A hashable key of a JSON value, equal for JSON-equal values; None if not JSON."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list | tuple):
        items = [value_key(v) for v in value]
        return None if any(i is None for i in items) else ("array", tuple(items))
    if isinstance(value, Mapping):
        pairs = [(k, value_key(v)) for k, v in value.items()]
        if any(v is None or not isinstance(k, str) for k, v in pairs):
            return None
        return ("object", frozenset(pairs))
    return None


def _add(lists: dict[Any, _Posting], key: Any, item_id: str) -> None:
    held = lists.get(key)
    if held is None:
        lists[key] = item_id
    elif isinstance(held, str):
        lists[key] = {held, item_id}
    else:
        held.add(item_id)


def _discard(lists: dict[Any, _Posting], key: Any, item_id: str) -> None:
    held = lists.get(key)
    if held is None:
        return
    if isinstance(held, str):
        if held == item_id:
            del lists[key]
        return
    held.discard(item_id)
    if len(held) == 1:
        lists[key] = next(iter(held))


def _ids(held: _Posting | None) -> Collection[str]:
    if held is None:
        return ()
    return (held,) if isinstance(held, str) else held


class Postings:
    """Per-label and per-metadata-value posting lists of one shard's live items."""

    def __init__(self) -> None:
        self._labels: dict[LabelKey, _Posting] = {}
        self._values: dict[tuple[str, Hashable], _Posting] = {}
        self._unkeyed: dict[str, int] = {}

    def add(self, item_id: str, label: ItemLabel | None, metadata: Mapping[str, Any]) -> None:
        """Index a live item."""
        _add(self._labels, label_key(label), item_id)
        for key, value in metadata.items():
            vkey = value_key(value)
            if vkey is None:
                self._unkeyed[key] = self._unkeyed.get(key, 0) + 1
            else:
                _add(self._values, (key, vkey), item_id)

    def remove(self, item_id: str, label: ItemLabel | None, metadata: Mapping[str, Any]) -> None:
        """Forget an item indexed with this label and metadata."""
        _discard(self._labels, label_key(label), item_id)
        for key, value in metadata.items():
            vkey = value_key(value)
            if vkey is not None:
                _discard(self._values, (key, vkey), item_id)
            elif self._unkeyed.get(key, 0) > 1:
                self._unkeyed[key] -= 1
            else:
                self._unkeyed.pop(key, None)

    def candidates(self, flt: Filter, limit: int) -> tuple[int | None, list[str] | None]:
        """The shortest posting list that holds every item passing ``flt``.

        Args:
            flt: a non-empty filter.
            limit: list the ids only when there are at most this many.

        Returns:
            ``(count, ids)``: the list's length (None when no constraint can be
            looked up) and, when ``count ≤ limit``, its ids (a superset of the
            items that pass; check each against the filter).
        """
        best: tuple[int, Iterator[Collection[str]]] | None = None
        keys = flt.label_keys()
        if keys is not None:
            lists = [_ids(self._labels.get(key)) for key in keys]
            best = (sum(len(x) for x in lists), iter(lists))
        for key, value in flt.metadata.items():
            vkey = value_key(value)
            if vkey is None or key in self._unkeyed:
                continue
            ids = _ids(self._values.get((key, vkey)))
            if best is None or len(ids) < best[0]:
                best = (len(ids), iter([ids]))
        if best is None:
            return None, None
        count, lists_iter = best
        if count > limit:
            return count, None
        return count, [i for ids in lists_iter for i in ids]
