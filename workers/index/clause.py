"""`Clause`: metadata operators and boolean groups of a search filter.

A clause is a tree: leaves test one metadata key (`Equals`, `OneOf`, `Range`,
`Exists`) or the item label (`LabelIn`); `All`, `AnyOf` and `Negation` group
them. Semantics, on an item's label and metadata:

- `Equals` (``eq``): the key is present with a JSON-equal value
  (`workers.index.filter.json_equal`: ``1 == 1.0``, ``1 != "1"``, ``true != 1``);
- `OneOf` (``in``): the key holds a value JSON-equal to one of the values;
- `Range` (``gt``, ``gte``, ``lt``, ``lte``): the key holds a number (not a
  boolean) beyond / within the bound; a missing key or another type never passes;
- `Exists` (``exists``): the key is present, whatever its value (``null`` too);
- `Negation` (``not``, and ``ne`` = not ``eq``): the child does not pass, so a
  missing key passes a negation;
- `All` (``and``) and `AnyOf` (``or``): every / at least one child passes.

Clauses are pure values (no I/O); `workers.index.postings` answers the ones it
can from posting lists and the shard checks the rest item by item.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from workers.index.filter import ItemLabel, LabelKey, json_equal, label_key

RangeOp = Literal["gt", "gte", "lt", "lte"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


class Clause:
    """A node of a filter's clause tree."""

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        """Whether an item with this label and metadata passes."""
        raise NotImplementedError

    def to_json(self) -> Any:
        """A canonical JSON-ready form (equal clauses give equal forms)."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """A canonical string of the clause for cache keys."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class LabelIn(Clause):
    """The item's label is one of ``labels``."""

    labels: frozenset[ItemLabel]
    keys: frozenset[LabelKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", frozenset(label_key(x) for x in self.labels))

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        return label_key(label) in self.keys

    def to_json(self) -> Any:
        return {"labels": sorted(self.labels, key=lambda x: (type(x).__name__, str(x)))}


@dataclass(frozen=True)
class Equals(Clause):
    """Metadata ``key`` holds a value JSON-equal to ``value``."""

    key: str
    value: Any

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        return self.key in metadata and json_equal(metadata[self.key], self.value)

    def to_json(self) -> Any:
        return {"eq": {self.key: self.value}}


@dataclass(frozen=True)
class OneOf(Clause):
    """Metadata ``key`` holds a value JSON-equal to one of ``values``."""

    key: str
    values: tuple[Any, ...]

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        if self.key not in metadata:
            return False
        held = metadata[self.key]
        return any(json_equal(held, v) for v in self.values)

    def to_json(self) -> Any:
        values = sorted(self.values, key=lambda v: json.dumps(v, sort_keys=True))
        return {"in": {self.key: values}}


@dataclass(frozen=True)
class Range(Clause):
    """Metadata ``key`` holds a number that compares with ``bound`` by ``op``."""

    key: str
    op: RangeOp
    bound: float

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        held = metadata.get(self.key)
        if isinstance(held, bool) or not isinstance(held, int | float):
            return False
        return not math.isnan(held) and _COMPARE[self.op](held, self.bound)

    def to_json(self) -> Any:
        return {self.op: {self.key: self.bound}}


@dataclass(frozen=True)
class Exists(Clause):
    """Metadata ``key`` is present (any value)."""

    key: str

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        return self.key in metadata

    def to_json(self) -> Any:
        return {"exists": self.key}


@dataclass(frozen=True)
class Negation(Clause):
    """The child does not pass."""

    child: Clause

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        return not self.child.matches(label, metadata)

    def to_json(self) -> Any:
        return {"not": self.child.to_json()}


@dataclass(frozen=True)
class All(Clause):
    """Every child passes (no child: everything passes)."""

    children: tuple[Clause, ...]

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        return all(c.matches(label, metadata) for c in self.children)

    def to_json(self) -> Any:
        return {"and": sorted((c.to_json() for c in self.children), key=_canonical)}


@dataclass(frozen=True)
class AnyOf(Clause):
    """At least one child passes."""

    children: tuple[Clause, ...]

    def matches(self, label: ItemLabel | None, metadata: Mapping[str, Any]) -> bool:
        return any(c.matches(label, metadata) for c in self.children)

    def to_json(self) -> Any:
        return {"or": sorted((c.to_json() for c in self.children), key=_canonical)}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
