"""Which replicas the router asks, and how it merges the sets' answers (no services)."""

from __future__ import annotations

import asyncio

import httpx

from workers.cluster.membership import ClusterView, GenerationState, NodeRecord
from workers.router.fanout import Fanout, SetAnswer
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
    async def ask() -> SetAnswer:
        async with httpx.AsyncClient(timeout=1) as client:
            fanout = Fanout(client, hedge_s=0.05, partitions=4)
            dead = [_record("gone", 0, (0, 2), url="http://127.0.0.1:9")]
            return await fanout.ask(dead, fanout.post("/internal/v1/search", {}, {}), 0)

    answer = asyncio.run(ask())
    assert answer.node is None and answer.body is None


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


def test_the_cluster_total_is_the_first_replica_of_each_set_and_none_when_unknown() -> None:
    from workers.router.service import total_live

    def held(node_id: str, partition_set: int, live: int) -> NodeRecord:
        state = GenerationState("serving", True, {partition_set: 5}, live=live)
        return _record(node_id, partition_set, (partition_set,), generations={"v1": state})

    order = {0: [held("a", 0, 300), held("a2", 0, 299)], 1: [held("b", 1, 200)], 2: []}
    assert total_live(order, "v1") == 500
    assert total_live({0: [_record("old", 0, (0,))]}, "v1") is None


def _replying(statuses: dict[str, int]) -> Fanout:
    """A Fanout whose nodes answer with the given status (503: ``not_ready``)."""

    def reply(request: httpx.Request) -> httpx.Response:
        status = statuses[request.url.host]
        if status == 200:
            return httpx.Response(200, json={"version": "v1", "partitions": [0], "results": []})
        body = {"code": "not_ready" if status == 503 else "internal", "detail": f"{status}"}
        return httpx.Response(status, json=body, headers={"Retry-After": "4"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(reply))
    return Fanout(client, hedge_s=0.0, partitions=4)


def test_a_set_whose_replicas_have_not_applied_the_write_is_behind_not_missing() -> None:
    replicas = [_record("a", 0, (0, 2)), _record("b", 0, (0, 2))]

    def ask(statuses: dict[str, int]) -> SetAnswer:
        fanout = _replying(statuses)
        return asyncio.run(fanout.ask(replicas, fanout.post("/s", {}, {}), 0))

    behind = ask({"a": 503, "b": 503})
    assert behind.node is None and behind.behind is not None
    assert behind.behind.retry_after_s == 4.0
    failed = ask({"a": 500, "b": 500})
    assert failed.node is None and failed.behind is None
    answered = ask({"a": 503, "b": 200})
    assert answered.node is not None and answered.node.id == "b"
