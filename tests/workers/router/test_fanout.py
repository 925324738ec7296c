"""Which replicas the router asks, and how it merges the sets' answers (no services)."""

from __future__ import annotations

import asyncio

import httpx

from workers.cluster.membership import ClusterView, GenerationState, NodeRecord
from workers.router.fanout import Fanout
from workers.router.merge import merge


def _record(
    node_id: str, partition_set: int, partitions: tuple[int, ...], **kw: object
) -> NodeRecord:
    generations = {"v1": GenerationState("serving", True, dict.fromkeys(partitions, 5))}
    values: dict[str, object] = {
        "url": f"http://{node_id}",
        "serving": "v1",
        "generations": generations,
        "ready": True,
    }
    values.update(kw)
    return NodeRecord(node_id, partition_set=partition_set, partitions=partitions, **values)  # type: ignore[arg-type]


def _fanout() -> Fanout:
    return Fanout(httpx.AsyncClient(), hedge_s=0.05, partitions=4)


def test_the_replicas_of_a_set_take_turns_first_and_other_sets_keep_their_own_turns() -> None:
    view = ClusterView(
        (
            _record("a-0", 0, (0, 2)),
            _record("a-2", 0, (0, 2)),
            _record("b-1", 1, (1, 3)),
            _record("b-3", 1, (1, 3)),
        ),
        2,
    )
    fanout = _fanout()
    firsts = {s: [fanout.replicas(view, s, "v1")[0].id for _ in range(4)] for s in (0, 1)}
    assert firsts == {0: ["a-0", "a-2", "a-0", "a-2"], 1: ["b-1", "b-3", "b-1", "b-3"]}


def test_a_replica_not_ready_without_the_version_or_with_other_partitions_is_never_asked() -> None:
    building = {"v1": GenerationState("building", False, {0: 1, 2: 1})}
    view = ClusterView(
        (
            _record("ok", 0, (0, 2)),
            _record("not-ready", 0, (0, 2), ready=False),
            _record("still-building", 0, (0, 2), generations=building),
            _record("everything", 0, (0, 1, 2, 3)),  # configured with another set count
        ),
        2,
    )
    assert [r.id for r in _fanout().replicas(view, 0, "v1")] == ["ok"]


def test_a_set_whose_replicas_all_refuse_to_connect_is_answered_as_missing() -> None:
    async def ask() -> object:
        async with httpx.AsyncClient(timeout=1) as client:
            fanout = Fanout(client, hedge_s=0.05, partitions=4)
            dead = [_record("gone", 0, (0, 2), url="http://127.0.0.1:9")]
            return await fanout.ask(dead, fanout.post("/internal/v1/search", {}, {}), 0)

    answer = asyncio.run(ask())
    assert answer.node is None and answer.body is None  # type: ignore[attr-defined]


def test_merged_answers_are_nearest_first_ties_by_id_and_exhaustive_only_if_every_set_was() -> None:
    def body(ids: list[str], distances: list[float], exhaustive: bool) -> dict[str, object]:
        return {
            "results": [
                {
                    "ids": ids,
                    "distances": distances,
                    "labels": [None] * len(ids),
                    "metadata": [{}] * len(ids),
                    "exhaustive": exhaustive,
                }
            ]
        }

    answers = [body(["b", "d"], [0.1, 0.4], True), body(["a", "c"], [0.1, 0.2], False)]
    [(rows, exhaustive)] = merge(answers, 1, 3)
    assert [(r["id"], r["distance"]) for r in rows] == [("a", 0.1), ("b", 0.1), ("c", 0.2)]
    assert exhaustive is False
