"""The query router over real node processes: 2 partition sets × 2 replicas.

Answers through the router equal a single node's on the same data; a SIGKILLed
replica costs no query; a set without any replica answers 503
``partition_unavailable`` by default and a flagged partial answer on request.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.waiting import wait_for
from tests.workers.api.conftest import PER_CLASS
from tests.workers.api.test_lookup import b64
from tests.workers.router.conftest import PARTITIONS, SETS, Cluster, embed_new

pytestmark = pytest.mark.services


def _vector(cluster: Cluster, item_id: str) -> list[float]:
    response = cluster.reference.get(f"/v1/items/{item_id}", params={"vector": "true"})
    assert response.status_code == 200, response.text
    vector: list[float] = response.json()["vector"]
    return vector


def _same_neighbours(routed: list[dict[str, Any]], single: list[dict[str, Any]]) -> None:
    assert [n["id"] for n in routed] == [n["id"] for n in single]
    assert [n["distance"] for n in routed] == pytest.approx(
        [n["distance"] for n in single], abs=1e-5
    )
    assert [n["label"] for n in routed] == [n["label"] for n in single]


def test_the_router_answers_what_a_single_node_holding_every_partition_answers(
    cluster: Cluster,
) -> None:
    view = cluster.membership.view(SETS)
    assert {s: sorted(n.id for n in nodes) for s, nodes in view.sets.items()} == {
        0: ["node-0", "node-2"],
        1: ["node-1", "node-3"],
    }
    assert {n.partitions for n in view.nodes} == {(0, 2), (1, 3)}
    for item_id in cluster.digits.ids[::9]:
        query = {"vector": _vector(cluster, item_id), "k": 10, "fresh": True}
        routed = cluster.router.post("/v1/lookup", json=query)
        single = cluster.reference.post("/v1/lookup", json=query)
        assert routed.status_code == 200, routed.text
        body = routed.json()
        assert body["model_version"] == cluster.version
        assert body["partial"] is False and body["missing_partitions"] == []
        _same_neighbours(body["neighbors"], single.json()["neighbors"])


def test_the_router_embeds_images_once_and_answers_ids_batches_and_classify_like_a_node(
    cluster: Cluster,
) -> None:
    digits = cluster.digits
    image = {"image": b64(digits.pngs[17]), "k": 5, "fresh": True}
    by_id = {"id": digits.ids[30], "k": 5, "fresh": True}
    for query in (image, by_id):
        routed = cluster.router.post("/v1/lookup", json=query)
        assert routed.status_code == 200, routed.text
        single = cluster.reference.post("/v1/lookup", json=query).json()
        _same_neighbours(routed.json()["neighbors"], single["neighbors"])
    batch = {"queries": [{"id": i} for i in digits.ids[:6]], "k": 4}
    routed_batch = cluster.router.post("/v1/lookup/batch", json=batch).json()
    single_batch = cluster.reference.post("/v1/lookup/batch", json=batch).json()
    for mine, theirs in zip(routed_batch["results"], single_batch["results"], strict=True):
        _same_neighbours(mine["neighbors"], theirs["neighbors"])
    classify = {"id": digits.ids[50], "k": 7, "threshold": 10.0}
    routed_label = cluster.router.post("/v1/classify", json=classify).json()
    single_label = cluster.reference.post("/v1/classify", json=classify).json()
    assert routed_label["label"] == single_label["label"]
    assert routed_label["votes"] == single_label["votes"]
    item = cluster.router.get(f"/v1/items/{digits.ids[77]}")
    assert item.status_code == 200 and item.json()["label"] == digits.labels[77]
    assert cluster.router.get("/v1/items/no-such-item").json()["code"] == "not_found"


def test_the_router_votes_by_centroids_summed_over_every_partition_set(
    cluster: Cluster,
) -> None:
    digits = cluster.digits
    asked = {"k": 9, "threshold": 10.0, "vote": "centroid"}
    # Digits are published class by class, PER_CLASS each: the filter keeps part of each.
    starts = [c * PER_CLASS for c in range(10)]
    part = {"or": [{"gte": {"n": start}, "lt": {"n": start + 5}} for start in starts]}
    filtered = {"id": digits.ids[49], "filter": part}
    for query in ({"id": digits.ids[50]}, {"image": b64(digits.pngs[18])}, filtered):
        routed = cluster.router.post("/v1/classify", json={**query, **asked})
        single = cluster.reference.post("/v1/classify", json={**query, **asked})

        assert routed.status_code == 200, routed.text
        mine, theirs = routed.json()["votes"], single.json()["votes"]
        assert [v["label"] for v in mine] == [v["label"] for v in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert a["centroid_distance"] == pytest.approx(b["centroid_distance"], abs=1e-5)
        assert routed.json()["label"] == single.json()["label"]
    # The filter changed the centroids the router reproduced.
    unfiltered = cluster.reference.post("/v1/classify", json={**asked, "id": digits.ids[49]})
    whole = {v["label"]: v["centroid_distance"] for v in unfiltered.json()["votes"]}
    part_of = {v["label"]: v["centroid_distance"] for v in theirs}
    assert any(abs(whole[label] - part_of[label]) > 1e-6 for label in whole.keys() & part_of)


def test_a_cached_router_answer_is_reused_until_a_partition_moves(cluster: Cluster) -> None:
    query = {"vector": _vector(cluster, cluster.digits.ids[3]), "k": 3}
    first = cluster.router.post("/v1/lookup", json=query)
    second = cluster.router.post("/v1/lookup", json=query)
    assert first.headers["X-Cache"] in ("hit", "miss")
    assert second.headers["X-Cache"] == "hit"
    assert second.json()["neighbors"] == first.json()["neighbors"]


def _write(cluster: Cluster, item_id: str, digit: int) -> tuple[str, str]:
    """Write a digit's image as ``item_id`` through a node; return the image and its token."""
    image = b64(cluster.digits.pngs[digit])
    written = cluster.reference.post("/v1/items", json={"id": item_id, "image": image})
    assert written.status_code == 202, written.text
    return image, written.json()["token"]


def test_a_write_token_is_waited_for_only_by_the_owners_of_its_partition(
    cluster: Cluster,
) -> None:
    image, token = _write(cluster, "routed-new", 4)
    embed_new(cluster.settings, cluster.version)
    query = {"image": image, "k": 3, "after": token}
    routed = cluster.router.post("/v1/lookup", json=query)
    assert routed.status_code == 200, routed.text
    assert "routed-new" in [n["id"] for n in routed.json()["neighbors"]]
    assert routed.headers["X-Cache"] == "bypass"


def test_a_write_token_its_owners_have_not_applied_is_a_503_not_ready_with_retry_after(
    cluster: Cluster,
) -> None:
    """Not ``partition_unavailable``: the set's replicas are healthy, the write is on its way."""
    image, token = _write(cluster, "routed-later", 5)
    try:
        routed = cluster.router.post("/v1/lookup", json={"image": image, "k": 3, "after": token})
        assert routed.status_code == 503, routed.text
        assert routed.json()["code"] == "not_ready", routed.text
        assert "has not applied write" in routed.json()["detail"]
        assert float(routed.headers["Retry-After"]) >= 1
    finally:
        embed_new(cluster.settings, cluster.version)  # the next tests expect it searchable


def _register_everywhere(cluster: Cluster, seed: int) -> str:
    """Register and promote a CNN of other weights in the registry of every node and of the
    router (each node process has its own copy); return its version."""
    import keras

    from model import encoders
    from model.inputs import InputSpec
    from model.registry import Registry
    from tests.workers.api.conftest import EMBEDDING_DIM

    keras.utils.set_random_seed(seed)
    builder = encoders.get({"name": "cnn", "filters": [8, 16], "convs_per_block": 1})
    model, spec = builder.build(InputSpec.image(8, 8, 1), EMBEDDING_DIM, seed=seed)
    config = {"distance": "cosine", "embedding_dim": EMBEDDING_DIM}
    roots = [cluster.settings.registry_dir] + [n.registry for n in cluster.nodes]
    versions = {
        Registry(r).register(model, spec, config=config, promote=True).version for r in roots
    }
    [version] = versions
    return version


def _stream(cluster: Cluster, stop: threading.Event, failures: list[str], count: list[int]) -> None:
    vectors = [_vector(cluster, i) for i in cluster.digits.ids[:20]]
    while not stop.is_set():
        for vector in vectors:
            response = cluster.router.post(
                "/v1/lookup", json={"vector": vector, "k": 5, "fresh": True}
            )
            count[0] += 1
            if response.status_code != 200 or len(response.json()["neighbors"]) != 5:
                failures.append(f"{response.status_code} {response.text[:200]}")


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_sigkill_of_one_replica_during_a_query_stream_fails_no_query(cluster: Cluster) -> None:
    victim = cluster.replicas(0)[0]
    failed_before = _counter("simstream_router_replica_failures_total")
    stop, failures, count = threading.Event(), list[str](), [0]
    stream = threading.Thread(target=_stream, args=(cluster, stop, failures, count))
    stream.start()
    try:
        wait_for(lambda: count[0] >= 20, 60, 0.05, "queries before the kill")
        victim.child.kill()
        killed_at = count[0]
        # Until its record expires and well after: the router keeps answering.
        wait_for(lambda: victim.id not in cluster.live(), 30, 0.1, "record expired")
        wait_for(lambda: count[0] >= killed_at + 60, 60, 0.05, "queries after the kill")
    finally:
        stop.set()
        stream.join(60)
    assert failures == []
    assert count[0] > killed_at
    # The kill did hit queries: the router asked the dead replica and moved on.
    assert _counter("simstream_router_replica_failures_total") > failed_before
    cluster.restart(victim)


def test_a_stalled_replica_is_hedged_by_the_other_replica_of_its_set(cluster: Cluster) -> None:
    stalled = cluster.replicas(1)[0]
    hedged_before = _counter("simstream_router_hedged_requests_total")
    stop, failures, count = threading.Event(), list[str](), [0]
    stream = threading.Thread(target=_stream, args=(cluster, stop, failures, count))
    stream.start()
    assert stalled.child.process is not None
    try:
        wait_for(lambda: count[0] >= 10, 60, 0.05, "queries before the stall")
        stalled.child.process.send_signal(signal.SIGSTOP)
        stalled_at = count[0]
        wait_for(lambda: count[0] >= stalled_at + 20, 60, 0.05, "queries during the stall")
    finally:
        stalled.child.process.send_signal(signal.SIGCONT)
        stop.set()
        stream.join(60)
    assert failures == []
    assert _counter("simstream_router_hedged_requests_total") > hedged_before


def test_a_rolling_restart_of_every_node_under_load_fails_no_query(cluster: Cluster) -> None:
    stop, failures, count = threading.Event(), list[str](), [0]
    stream = threading.Thread(target=_stream, args=(cluster, stop, failures, count))
    stream.start()
    try:
        for node in cluster.nodes:
            node.child.stop()
            target = count[0] + 10

            def answered(target: int = target) -> bool:
                return count[0] >= target

            wait_for(answered, 60, 0.05, "queries while it is down")
            cluster.restart(node)
    finally:
        stop.set()
        stream.join(60)
    assert failures == []
    assert count[0] >= 10 * len(cluster.nodes)


def test_a_retrain_flip_under_load_answers_each_query_from_one_version(cluster: Cluster) -> None:
    ids = cluster.digits.ids[10:15]
    answers: list[tuple[str, str, list[str]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            for item_id in ids:
                query = {"id": item_id, "k": 5, "fresh": True}
                response = cluster.router.post("/v1/lookup", json=query)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                body = response.json()
                answers.append(
                    (item_id, body["model_version"], [n["id"] for n in body["neighbors"]])
                )

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        wait_for(lambda: len(answers) >= 10, 60, 0.05, "answers before the flip")
        new = _register_everywhere(cluster, seed=7)
        embed_new(cluster.settings, new, everything=True)
        wait_for(lambda: answers[-1][1] == new, 180, 0.2, f"the cluster serving {new}")
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 10, 60, 0.05, "answers after the flip")
    finally:
        stop.set()
        thread.join(60)
    assert failures == []
    versions = [v for _, v, _ in answers]
    assert versions[0] == cluster.version and versions[-1] == new
    # Each version answers each query one way: a mixed answer (one version's vector in
    # the other's shards, or sets of different versions) would be a third way.
    by_query: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for item_id, version, neighbours in answers:
        by_query.setdefault((item_id, version), set()).add(tuple(neighbours))
    assert all(len(ways) == 1 for ways in by_query.values()), by_query
    assert any(
        by_query[(i, cluster.version)] != by_query[(i, new)] for i in ids if (i, new) in by_query
    )


def test_sigkill_of_every_replica_of_a_set_is_a_503_or_a_flagged_partial_answer(
    cluster: Cluster,
) -> None:
    query = {"vector": _vector(cluster, cluster.digits.ids[8]), "k": 10, "fresh": True}
    whole = cluster.router.post("/v1/lookup", json=query).json()
    for node in cluster.replicas(1):
        node.child.kill()
    missing = [p for p in range(PARTITIONS) if p % SETS == 1]
    try:
        refused = cluster.router.post("/v1/lookup", json=query)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "partition_unavailable"
        assert refused.json()["missing_partitions"] == missing
        assert "request_id" in refused.json() and "[1, 3]" in refused.json()["detail"]
        partial = cluster.router.post("/v1/lookup", json={**query, "partial": True})
        assert partial.status_code == 200, partial.text
        body = partial.json()
        assert body["partial"] is True and body["missing_partitions"] == missing
        kept = [n for n in whole["neighbors"] if _partition_set(cluster, n["id"]) == 0]
        assert [n["id"] for n in body["neighbors"]][: len(kept)] == [n["id"] for n in kept]
    finally:
        for node in cluster.replicas(1):
            cluster.restart(node)


def _partition_set(cluster: Cluster, item_id: str) -> int:
    from workers.index.partitioning import partition_for

    return partition_for(item_id, PARTITIONS) % SETS
