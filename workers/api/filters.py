"""`to_filter`: a request's `FilterSpec` as the index's `Filter`.

The top level's ``labels`` and ``metadata`` stay the filter's own (the posting
lists answer them as before); its operators and groups become the filter's
clause (`workers.index.clause`), and a nested filter becomes a clause whole.
"""

from __future__ import annotations

from workers.api.schemas import FilterSpec
from workers.index.clause import (
    All,
    AnyOf,
    Clause,
    Equals,
    Exists,
    LabelIn,
    Negation,
    OneOf,
    Range,
    RangeOp,
)
from workers.index.filter import Filter, ItemLabel

_RANGES: tuple[RangeOp, ...] = ("gt", "gte", "lt", "lte")


def to_filter(spec: FilterSpec | None) -> Filter | None:
    """The index filter of ``spec``; None when it restricts nothing."""
    if spec is None:
        return None
    labels = None if spec.labels is None else frozenset[ItemLabel](spec.labels)
    operators = _operators(spec)
    where = None if not operators else operators[0] if len(operators) == 1 else All(operators)
    flt = Filter(labels=labels, metadata=dict(spec.metadata), where=where)
    return None if flt.empty else flt


def _clause(spec: FilterSpec) -> Clause:
    parts: list[Clause] = []
    if spec.labels is not None:
        parts.append(LabelIn(frozenset(spec.labels)))
    parts.extend(Equals(key, value) for key, value in spec.metadata.items())
    parts.extend(_operators(spec))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _operators(spec: FilterSpec) -> tuple[Clause, ...]:
    parts: list[Clause] = []
    parts.extend(Equals(key, value) for key, value in (spec.eq or {}).items())
    parts.extend(Negation(Equals(key, value)) for key, value in (spec.ne or {}).items())
    parts.extend(OneOf(key, tuple(values)) for key, values in (spec.in_ or {}).items())
    for op in _RANGES:
        bounds: dict[str, float] = getattr(spec, op) or {}
        parts.extend(Range(key, op, bound) for key, bound in bounds.items())
    if spec.exists is not None:
        keys = [spec.exists] if isinstance(spec.exists, str) else spec.exists
        parts.extend(Exists(key) for key in keys)
    if spec.and_ is not None:
        parts.append(All(tuple(_clause(child) for child in spec.and_)))
    if spec.or_ is not None:
        parts.append(AnyOf(tuple(_clause(child) for child in spec.or_)))
    if spec.not_ is not None:
        parts.append(Negation(_clause(spec.not_)))
    return tuple(parts)
