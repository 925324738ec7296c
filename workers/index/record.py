"""What the index consumes: one upsert or delete of one item, with its source offset.

The wire format (the embeddings topic's ``EmbeddingRecord``) lives in
`simstream.wire`; the index only needs the attributes of `IndexRecord`, so any
frozen dataclass with these fields fits. `Mutation` is a plain implementation for
tests, benchmarks and callers that build records themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from simstream.wire import Op
from workers.index.filter import ItemLabel


class IndexRecord(Protocol):
    """The attributes the index reads from a record.

    ``op`` is `Op.UPSERT` or `Op.DELETE` (the index rejects any other value);
    ``source_offset`` is the record's offset in the ``items`` topic and decides
    which of two events for the same id wins; ``vector`` may be None for deletes.
    """

    @property
    def item_id(self) -> str: ...

    @property
    def op(self) -> str: ...

    @property
    def vector(self) -> Sequence[float] | np.ndarray | None: ...

    @property
    def label(self) -> ItemLabel | None: ...

    @property
    def metadata(self) -> Mapping[str, Any] | None: ...

    @property
    def source_offset(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Mutation:
    """A ready-made `IndexRecord`."""

    item_id: str
    op: str
    source_offset: int
    vector: Sequence[float] | np.ndarray | None = None
    label: ItemLabel | None = None
    metadata: Mapping[str, Any] | None = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def upsert(
        cls,
        item_id: str,
        vector: Sequence[float] | np.ndarray,
        source_offset: int,
        label: ItemLabel | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Mutation:
        """An upsert of ``item_id``."""
        return cls(item_id, Op.UPSERT, source_offset, vector, label, metadata or {})

    @classmethod
    def delete(cls, item_id: str, source_offset: int) -> Mutation:
        """A delete of ``item_id``."""
        return cls(item_id, Op.DELETE, source_offset)
