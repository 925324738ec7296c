"""`ClusterView`: what the live node records add up to (pure: no Redis)."""

from __future__ import annotations

from workers.cluster.membership import ClusterView, GenerationState, NodeRecord

SETS = 2


def _node(
    node_id: str,
    partition_set: int,
    serving: str | None,
    generations: dict[str, tuple[str, bool]],
    ready: bool = True,
) -> NodeRecord:
    partitions = tuple(range(partition_set, 4, SETS))
    return NodeRecord(
        id=node_id,
        url=f"http://{node_id}",
        partition_set=partition_set,
        partitions=partitions,
        serving=serving,
        generations={v: GenerationState(s, c, {}) for v, (s, c) in generations.items()},  # type: ignore[arg-type]
        ready=ready,
    )


def test_every_set_is_listed_even_without_a_live_node() -> None:
    view = ClusterView((_node("a", 0, "v1", {"v1": ("serving", True)}),), SETS)
    assert {s: [n.id for n in nodes] for s, nodes in view.sets.items()} == {0: ["a"], 1: []}


def test_owners_of_a_partition_are_the_nodes_of_its_set() -> None:
    view = ClusterView(
        (
            _node("a", 0, "v1", {}),
            _node("b", 1, "v1", {}),
            _node("c", 0, "v1", {}),
        ),
        SETS,
    )
    assert [n.id for n in view.owners(2)] == ["a", "c"]
    assert [n.id for n in view.owners(3)] == ["b"]


def test_versions_needed_is_the_union_over_nodes_in_different_states() -> None:
    flipped = _node("a", 0, "v2", {"v2": ("serving", True), "v1": ("retained", True)})
    behind = _node("b", 0, "v1", {"v1": ("serving", True), "v2": ("building", False)})
    fresh = _node("c", 1, None, {"v3": ("building", False)})
    assert ClusterView((flipped, behind, fresh), SETS).versions_needed() == {"v1", "v2", "v3"}


def test_a_version_is_caught_up_everywhere_only_when_every_set_has_a_caught_up_owner() -> None:
    a = _node("a", 0, "v1", {"v1": ("serving", True), "v2": ("building", True)})
    b = _node("b", 1, "v1", {"v1": ("serving", True), "v2": ("building", False)})
    c = _node("c", 1, "v1", {"v1": ("serving", True), "v2": ("building", True)})
    assert not ClusterView((a, b), SETS).caught_up_everywhere("v2")
    assert ClusterView((a, b, c), SETS).caught_up_everywhere("v2")
    assert not ClusterView((b, c), SETS).caught_up_everywhere("v2")  # set 0 has no node


def test_the_serving_version_needs_a_ready_replica_of_it_in_every_set() -> None:
    a = _node("a", 0, "v1", {})
    b = _node("b", 1, "v1", {}, ready=False)
    assert ClusterView((a, b), SETS).serving_version() is None
    c = _node("c", 1, "v1", {})
    assert ClusterView((a, b, c), SETS).serving_version() == "v1"


def test_sets_that_serve_different_versions_have_no_serving_version() -> None:
    view = ClusterView((_node("a", 0, "v2", {}), _node("b", 1, "v1", {})), SETS)
    assert view.serving_version() is None


def test_mid_flip_the_preferred_version_wins_else_the_most_served() -> None:
    nodes = (
        _node("a", 0, "v2", {}),
        _node("b", 0, "v1", {}),
        _node("c", 1, "v1", {}),
        _node("d", 1, "v2", {}),
        _node("e", 1, "v2", {}),
    )
    view = ClusterView(nodes, SETS)
    assert view.serving_version(prefer="v1") == "v1"
    assert view.serving_version() == "v2"
    assert not view.everyone_serves("v2")
    assert ClusterView(nodes[::3], SETS).everyone_serves("v2")


def test_a_nodes_own_record_replaces_its_older_one() -> None:
    old = _node("a", 0, "v1", {})
    new = _node("a", 0, "v2", {})
    view = ClusterView((old, _node("b", 1, "v1", {})), SETS).with_node(new)
    assert sorted((n.id, n.serving) for n in view.nodes) == [("a", "v2"), ("b", "v1")]


def test_a_record_survives_json_unchanged() -> None:
    record = _node("a", 1, "v1", {"v1": ("serving", True), "v0": ("retained", False)})
    assert NodeRecord.from_json(record.to_json()) == record
