"""Listing items by pages in id order, over every shard, without state on the server.

Each shard answers the first ``limit`` ids after the cursor that pass the
filter, from its `ItemOrder` (O(log n + limit)). With a filter a shard looks
at no more than a scan budget of ids per page: a page under a rare filter may
be short, even empty, and still carry a cursor; only the last page has none.
The shard pages are merged by id (``heapq.merge``) and cut at ``limit`` and
at the lowest id a shard stopped scanning at, so an id at or before the
returned cursor is never skipped. The cursor is the last id looked at, so a
scan of any size needs nothing kept between pages; ids added behind the
cursor during a scan are not seen by it, ids ahead of it are.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from workers.index.shard import Item, ShardPage


@dataclass(frozen=True, slots=True)
class Page:
    """A page of items in id order.

    Attributes:
        items: at most ``limit`` items, in id order.
        after: the id the next page starts after, or None when this page is the last.
    """

    items: list[Item]
    after: str | None


def merge_pages(pages: Sequence[ShardPage], limit: int) -> tuple[list[tuple[int, str]], str | None]:
    """The first ``limit`` ids of the shards' pages by id, each with the position of its
    page (an id held twice counts once), and the id the next page starts after (None: the
    end)."""
    bound = min((p.stopped_at for p in pages if p.stopped_at is not None), default=None)
    tagged = ([(item_id, n) for item_id in page.ids] for n, page in enumerate(pages))
    chosen: list[tuple[int, str]] = []
    last: str | None = None
    for item_id, n in heapq.merge(*tagged):
        if bound is not None and item_id > bound:
            break
        if item_id == last:
            continue
        chosen.append((n, item_id))
        last = item_id
        if len(chosen) == limit:
            return chosen, item_id
    return chosen, bound
