"""`WriteWaiter`: read-your-writes without holding a thread while waiting.

A lookup with ``after`` pins the serving generation, checks the token (its
topic, partition, and that its offset is below the partition's end), then
waits on the event loop until that generation has accounted for the offset,
at most ``write_wait_s``. A batch's token names one offset per partition; all
of them are waited for within that one bound. A token past the known end awaits the shared,
spaced end-offset refresh (`PartitionEnds`), whose broker call runs in the
small wait pool, never in the pool that runs request handlers nor on the event
loop, so waiting requests hold no thread and cannot starve other routes or the
probes; they wait outside their route class's count (`workers.api.limits.waiting`).
"""

from __future__ import annotations

import asyncio
import time

from simstream.errors import DecodeError, NotReadyError, RequestError
from simstream.wire import Reason, WriteToken
from workers.api.client_budget import charge_waits
from workers.api.codes import ErrorCode
from workers.api.config import SearchConfig
from workers.api.end_offsets import PartitionEnds
from workers.api.limits import waiting
from workers.node.generation import IndexGeneration
from workers.node.node import IndexNode

_FIRST_POLL_S = 0.005
_LONGEST_POLL_S = 0.05


class WriteWaiter:
    """Pins the serving generation of a request and waits for its write token.

    Args:
        config: the items topic, its partitions and the wait bound.
        node: the index node.
        ends: the items topic's end offsets.
    """

    def __init__(self, config: SearchConfig, node: IndexNode, ends: PartitionEnds) -> None:
        self.config = config
        self.node = node
        self.ends = ends

    async def generation(self, after: str | None) -> IndexGeneration:
        """The serving generation, once it has applied the write ``after`` names (if any).

        Raises:
            RequestError: (400) a malformed token, one of another topic or partition,
                or one at or past its partition's end offset.
            NotReadyError: (503) no generation serves, or the write is not visible
                within ``write_wait_s``.
        """
        generation = self.node.current()
        if after is not None:
            await self.wait_in(generation, after)
        return generation

    async def wait_in(self, generation: IndexGeneration, after: str) -> None:
        """Return once ``generation`` (any of the node's) has applied the write ``after`` names.

        Raises:
            RequestError: as `generation`.
            NotReadyError: the write is not visible within ``write_wait_s``.
        """
        deadline = time.monotonic() + self.config.write_wait_s
        for token in self.tokens(after):
            await self._visible(generation, token, after, deadline)

    async def _visible(
        self, generation: IndexGeneration, token: WriteToken, after: str, deadline: float
    ) -> None:
        """Return once ``generation`` has applied ``token``'s write (see `generation`)."""
        if generation.visible(token.partition, token.offset):
            return
        async with waiting(), charge_waits():
            end = await self.ends.end(token.partition, token.offset)
            if end is not None and token.offset >= end:
                raise RequestError(
                    f"Invalid value for `after`. Expected an offset below {end}, the end "
                    f"offset of {token.topic} partition {token.partition}. Received: offset "
                    f"{token.offset} (no event was written there)",
                    400,
                    Reason.BAD_TOKEN,
                    delayed=True,
                )
            await self._wait(generation, token, after, deadline)

    def tokens(self, after: str) -> tuple[WriteToken, ...]:
        """Parse and check a write token (see `parse_tokens`), and that this node holds
        its partitions.

        Raises:
            RequestError: 400 as `parse_tokens`; 421 (``not_owner``) for a partition this
                node does not hold (its owners can answer).
        """
        tokens = parse_tokens(self.config, after)
        owned = self.node.config.owned
        for token in tokens:
            if token.partition not in owned:
                raise RequestError(
                    f"Invalid value for `after`. Expected a write token of a partition this "
                    f"node ({self.node.config.cluster.node_id}) holds, one of {list(owned)}. "
                    f"Received: partition {token.partition}: ask the nodes of its partition set",
                    421,
                    ErrorCode.NOT_OWNER,
                )
        return tokens

    async def _wait(
        self, generation: IndexGeneration, token: WriteToken, after: str, deadline: float
    ) -> None:
        wait_s = self.config.write_wait_s
        poll = _FIRST_POLL_S
        while not generation.visible(token.partition, token.offset):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotReadyError(
                    f"The index (model {generation.version}) has not applied write {after} "
                    f"within {wait_s:g} s. Expected it to be embedded and indexed; it may "
                    "still be on its way — retry later.",
                    retry_after_s=max(1.0, wait_s / 2),
                )
            await asyncio.sleep(min(poll, remaining))
            poll = min(poll * 2, _LONGEST_POLL_S)


def parse_tokens(config: SearchConfig, after: str) -> tuple[WriteToken, ...]:
    """Parse and check a write token of one or more partitions (a batch's) against the
    items topic and its partitions.

    Raises:
        RequestError: (400) malformed, of another topic or of a missing partition.
    """
    try:
        tokens = WriteToken.decode_all(after, config.items_topic)
    except DecodeError as e:
        raise RequestError(
            f"Invalid value for `after`. {e.detail or e.reason}", 400, Reason.BAD_TOKEN
        ) from None
    topic, partitions = config.items_topic, config.partitions
    for token in tokens:
        if token.topic != topic:
            raise RequestError(
                f"Invalid value for `after`. Expected a write token of topic {topic!r}. "
                f"Received: a token of topic {token.topic!r}",
                400,
                Reason.BAD_TOKEN,
            )
        if token.partition >= partitions:
            raise RequestError(
                f"Invalid value for `after`. Expected a partition below "
                f"{partitions}. Received: partition {token.partition}",
                400,
                Reason.BAD_TOKEN,
            )
    return tokens
