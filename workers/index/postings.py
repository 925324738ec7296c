"""`Postings`: the live ids of each label and of each metadata ``key: value``.

A filtered search asks them which items pass a filter before it touches the
graph: each constraint of a `Filter` (its labels; each metadata pair) names a
posting list (the labels: the union of theirs), and the items that pass are
the intersection of those lists. When it is small
(``IndexConfig.exact_filter_limit``) the search scans exactly those items;
otherwise it post-filters the graph's neighbours against it (see
``docs/index.md``, "Filters").

Metadata values are keyed by their JSON value (`value_key`), consistently with
`workers.index.filter.json_equal`: two values that are JSON-equal have equal
keys (``1`` and ``1.0`` share one list; ``1``, ``"1"`` and ``true`` do not). A
key some item holds a value of another type for (not JSON) is never used to
narrow a search. The shard keeps the postings under its apply mutex and
rebuilds them from its entries when it is restored from a snapshot.

They also keep, per label, the sum of its items' stored vectors once asked
(`Postings.label_sum`: a class's centroid, what ``/v1/classify`` votes by with
``vote="centroid"``); adding or removing an item of a label forgets its sum.

A filter's clause (`workers.index.clause`) is looked up where it can be:
``eq``, ``in``, ``exists`` and labels from their lists, ``and`` as the
intersection of its children's, ``or`` as the union when every child can be
looked up. Ranges, ``ne`` and ``not`` cannot: they leave the candidates as they
are (everything, or what the other constraints narrowed them to), and the
shard checks each candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Container, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from workers.index.centroid import LabelSum
from workers.index.clause import All, AnyOf, Clause, Equals, Exists, LabelIn, OneOf
from workers.index.filter import Filter, ItemLabel, LabelKey, label_key

_SUM_CHUNK = 4096
"""Stored vectors read at once to sum a label's (bounds the temporary copy)."""

_Posting = str | set[str]
"""The ids of one posting list: a bare id while it holds one (most metadata values are
unique to an item), else a set."""


def value_key(value: Any) -> Hashable | None:
    """A hashable key of a JSON value, equal for JSON-equal values; None if not JSON."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        # NaN equals nothing, itself included (no JSON value is NaN).
        return None if isinstance(value, float) and math.isnan(value) else ("number", value)
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


def _summed(ids: list[str], vectors: Callable[[Sequence[str]], np.ndarray]) -> LabelSum | None:
    """The sum of the stored vectors of ``ids`` and their count (None: no id)."""
    if not ids:
        return None
    total = np.zeros(0)
    for start in range(0, len(ids), _SUM_CHUNK):
        part = vectors(ids[start : start + _SUM_CHUNK]).sum(axis=0, dtype=np.float64)
        total = part if not total.size else total + part
    return LabelSum(total, len(ids))


def _ids(held: _Posting | None) -> Collection[str]:
    if held is None:
        return ()
    return (held,) if isinstance(held, str) else held


class Postings:
    """Per-label and per-metadata-value posting lists of one shard's live items."""

    def __init__(self) -> None:
        self._labels: dict[LabelKey, _Posting] = {}
        self._sums: dict[LabelKey, LabelSum] = {}
        self._values: dict[tuple[str, Hashable], _Posting] = {}
        self._keys: dict[str, _Posting] = {}
        self._unkeyed: dict[str, int] = {}

    def add(self, item_id: str, label: ItemLabel | None, metadata: Mapping[str, Any]) -> None:
        """Index a live item."""
        labelled = label_key(label)
        _add(self._labels, labelled, item_id)
        self._sums.pop(labelled, None)
        for key, value in metadata.items():
            _add(self._keys, key, item_id)
            vkey = value_key(value)
            if vkey is None:
                self._unkeyed[key] = self._unkeyed.get(key, 0) + 1
            else:
                _add(self._values, (key, vkey), item_id)

    def remove(self, item_id: str, label: ItemLabel | None, metadata: Mapping[str, Any]) -> None:
        """Forget an item indexed with this label and metadata."""
        labelled = label_key(label)
        _discard(self._labels, labelled, item_id)
        self._sums.pop(labelled, None)
        for key, value in metadata.items():
            _discard(self._keys, key, item_id)
            vkey = value_key(value)
            if vkey is not None:
                _discard(self._values, (key, vkey), item_id)
            elif self._unkeyed.get(key, 0) > 1:
                self._unkeyed[key] -= 1
            else:
                self._unkeyed.pop(key, None)

    def label_sum(
        self, key: LabelKey, vectors: Callable[[Sequence[str]], np.ndarray]
    ) -> LabelSum | None:
        """The sum of the stored vectors of the live items with this label, and their
        count (None: no such item).

        Computed from ``vectors`` (the graph's stored vectors of ids) on first use,
        then kept until an item of the label is added or removed (an upsert of one
        is both), so a label that does not change costs one dictionary read. The
        caller holds the shard's lock shared at least (no write in between).
        """
        found = self._sums.get(key)
        if found is None:
            found = _summed(list(_ids(self._labels.get(key))), vectors)
            if found is not None:
                self._sums[key] = found
        return found

    def label_sum_within(
        self,
        key: LabelKey,
        passing: Container[str],
        vectors: Callable[[Sequence[str]], np.ndarray],
    ) -> LabelSum | None:
        """`label_sum` over the label's items in ``passing`` only (a filter's): summed
        each time, never kept."""
        return _summed([i for i in _ids(self._labels.get(key)) if i in passing], vectors)

    def matching(self, flt: Filter) -> tuple[set[str] | None, bool]:
        """The ids that hold every constraint of ``flt`` the posting lists can look up.

        The lists of the constraints are intersected shortest first (a label
        constraint is the union of its labels' lists), stopping as soon as the
        intersection is empty.

        Args:
            flt: a non-empty filter.

        Returns:
            ``(ids, complete)``: the intersection (None when no constraint can be
            looked up) and whether every constraint was looked up, i.e. whether
            ``ids`` are exactly the items that pass (else check each of them).
        """
        groups: list[list[Collection[str]]] = []
        complete = True
        keys = flt.label_keys()
        if keys is not None:
            groups.append([_ids(self._labels.get(key)) for key in keys])
        for key, value in flt.metadata.items():
            vkey = value_key(value)
            if vkey is None or key in self._unkeyed:
                complete = False
            else:
                groups.append([_ids(self._values.get((key, vkey)))])
        if flt.where is not None:
            ids, exact = self._clause(flt.where)
            complete = complete and exact
            if ids is not None:
                groups.append([ids])
        if not groups:
            return None, False
        groups.sort(key=lambda lists: sum(len(ids) for ids in lists))
        found: set[str] = set().union(*groups[0])
        for lists in groups[1:]:
            if not found:
                break
            found = set().union(*(found.intersection(ids) for ids in lists))
        return found, complete

    def _clause(self, clause: Clause) -> tuple[Collection[str] | None, bool]:
        """The candidates of a clause from the posting lists.

        Returns:
            ``(ids, exact)``: a superset of the items that pass (None: every item)
            and whether it is exactly those items.
        """
        if isinstance(clause, LabelIn):
            return set().union(*(_ids(self._labels.get(key)) for key in clause.keys)), True
        if isinstance(clause, Exists):
            return _ids(self._keys.get(clause.key)), True
        if isinstance(clause, Equals | OneOf):
            values = (clause.value,) if isinstance(clause, Equals) else clause.values
            vkeys = [value_key(v) for v in values]
            if clause.key in self._unkeyed or any(v is None for v in vkeys):
                return _ids(self._keys.get(clause.key)), False
            return set().union(*(_ids(self._values.get((clause.key, v))) for v in vkeys)), True
        if isinstance(clause, All):
            found: set[str] | None = None
            exact = True
            for child in sorted(clause.children, key=_lookup_cost):
                ids, child_exact = self._clause(child)
                exact = exact and child_exact
                if ids is not None:
                    found = set(ids) if found is None else found.intersection(ids)
                    if not found:
                        return found, True
            return found, exact
        if isinstance(clause, AnyOf):
            union: set[str] = set()
            exact = True
            for child in clause.children:
                ids, child_exact = self._clause(child)
                if ids is None:
                    return None, False
                union.update(ids)
                exact = exact and child_exact
            return union, exact
        return None, False  # ranges and negations: checked item by item


def _lookup_cost(clause: Clause) -> int:
    """Children of ``and`` that narrow by a posting list first, groups after them."""
    return 0 if isinstance(clause, LabelIn | Exists | Equals | OneOf) else 1
