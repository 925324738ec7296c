"""Search filters: on the item label, metadata equality and metadata clauses.

Semantics: an item passes a `Filter` when its label is one of ``labels`` (if
``labels`` is given) **and**, for every ``key: value`` in ``metadata``, the
item's metadata has ``key`` with a JSON-equal value **and** it passes the
clause ``where`` (operators and boolean groups: `workers.index.clause`). JSON-equal means equal
JSON type and value: ``1 == 1.0`` (both numbers) but ``1 != "1"``,
``True != 1`` and ``None`` only matches ``null``; lists and objects compare
element by element. A missing key never matches. An empty filter passes
everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from simstream.errors import IndexStoreError

if TYPE_CHECKING:
    from workers.index.clause import Clause

ItemLabel = str | int
"""An item's class label (as carried by the record): a string or an integer."""

LabelKey = tuple[str, ItemLabel | None]
"""A type-tagged item label (see `label_key`)."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def json_equal(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal in type and value (see module docstring)."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def label_key(label: ItemLabel | None) -> LabelKey:
    """A hashable key for an item label that keeps ``1``, ``"1"`` and ``True`` apart."""
    return (_kind(label), label)


def answered_label_keys(name: str) -> tuple[LabelKey, ...]:
    """The keys of the item labels an answer names ``name`` (answers give ``str(label)``:
    the string ``"7"`` and the integer ``7`` are both ``"7"``)."""
    keys: tuple[LabelKey, ...] = (label_key(name),)
    try:
        number = int(name)
    except ValueError:
        return keys
    return (*keys, label_key(number)) if str(number) == name else keys


@dataclass(frozen=True)
class Filter:
    """Which items a search may return.

    Attributes:
        labels: allowed item labels (None: any label, including none).
        metadata: ``key: value`` pairs every returned item's metadata must hold.
        where: a clause every returned item must pass (None: none).
    """

    labels: frozenset[ItemLabel] | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    where: Clause | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            bad = [x for x in self.labels if _kind(x) not in ("string", "number")]
            if bad:
                raise IndexStoreError(
                    f"Invalid value for `labels`. Expected strings or integers. Received: {bad!r}"
                )
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @classmethod
    def of(cls, labels: Iterable[ItemLabel] | ItemLabel | None = None, **metadata: Any) -> Filter:
        """Build a filter: ``Filter.of(labels=[3, 5], color="red")``."""
        if labels is None or isinstance(labels, str | int):
            allowed = None if labels is None else frozenset([labels])
        else:
            allowed = frozenset(labels)
        return cls(labels=allowed, metadata=metadata)

    @property
    def empty(self) -> bool:
        """Whether the filter passes every item."""
        return self.labels is None and not self.metadata and self.where is None

    def label_keys(self) -> frozenset[LabelKey] | None:
        """The allowed labels as type-tagged keys (so that 1 and True differ)."""
        if self.labels is None:
            return None
        return frozenset(label_key(x) for x in self.labels)

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        """Whether an item with this label and metadata passes."""
        if self.labels is not None:
            keys = self.label_keys()
            assert keys is not None
            if label_key(label) not in keys:
                return False
        for key, value in self.metadata.items():
            if key not in metadata or not json_equal(metadata[key], value):
                return False
        return self.where is None or self.where.matches(label, metadata)

    def cache_key(self) -> str:
        """A canonical string for cache keys: equal filters give equal strings."""
        labels = (
            None if self.labels is None else sorted(self.labels, key=lambda x: (_kind(x), str(x)))
        )
        key: dict[str, Any] = {"labels": labels, "metadata": dict(self.metadata)}
        if self.where is not None:
            key["where"] = self.where.to_json()
        return json.dumps(
            key,
            sort_keys=True,
            separators=(",", ":"),
        )
