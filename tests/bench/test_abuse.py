"""The abuse benchmark, run small: every figure is there and every attack got its refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.abuse import AFTER_CONCURRENCY, BATCH, BOMBS, EF_REQUESTS, run

ROUNDS = 2
KEYS = [
    "normal_p99_ms_idle",
    "normal_p99_ms_under_abuse",
    "normal_p99_ratio",
    "healthz_max_ms",
    "healthz_max_ms_under_abuse",
    "rss_growth_mb",
    "status_counts",
    "targets",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("abuse") / "abuse.json"
    # 2,000 items over 4 shards: the filter limits scaled down with them.
    limits = {"exact_filter_limit": 16, "filter_fetch_limit": 64}
    result = run(
        out,
        items=2000,
        rate=10.0,
        idle_s=2.0,
        filter_batches=1,
        rounds=ROUNDS,
        index_limits=limits,
    )
    assert json.loads(Path(out).read_text()) == result
    return result


@pytest.mark.services
@pytest.mark.slow
def test_the_report_has_every_figure_and_no_server_error(report: dict) -> None:
    assert all(key in report for key in KEYS)
    # at least ROUNDS, and more until the abuse lasted as long as the idle period
    assert report["rounds_run"] >= ROUNDS
    assert report["abuse_s"] >= 2.0  # the idle period's length
    assert report["normal_samples_under_abuse"] > 0
    total = report["status_counts"]["total"]
    assert not [status for status in total if status.startswith("5") or status == "0"], total
    assert report["status_counts"]["normal_idle"].get("200", 0) > 0
    assert set(report["status_counts"]["healthz"]) == {"200"}


def _answered_or_shed(counts: dict[str, int], expected: str, total: int, least: int) -> int:
    """Check that each of ``total`` requests got ``expected`` or a 429 (the attacker's
    client budget or in-flight cap, or a full route class), and at least ``least``
    got ``expected``; return how many did."""
    assert set(counts) <= {expected, "429"}, counts
    assert sum(counts.values()) == total, counts
    assert counts.get(expected, 0) >= least, counts
    return counts[expected]


@pytest.mark.services
@pytest.mark.slow
def test_a_filter_nothing_passes_is_answered_empty_and_exhaustive(
    report: dict,
) -> None:
    unmatched, disjoint = report["phases"]["unmatched_filter"], report["phases"]["disjoint_filter"]
    for phase in (unmatched, disjoint):
        answered = _answered_or_shed(phase["status_counts"], "200", report["rounds_run"], 1)
        assert phase["neighbours"] == 0
        # no item holds the value, or two large lists never meet: the empty intersection
        # of the posting lists answers exactly, without searching the graph
        assert phase["exhaustive"] == {"true": answered * BATCH}


@pytest.mark.services
@pytest.mark.slow
def test_far_future_write_tokens_are_refused_or_shed_never_waited_for(report: dict) -> None:
    phase = report["phases"]["far_future_after"]
    counts = phase["status_counts"]
    assert set(counts) <= {"400", "429"} and counts.get("400", 0) > 0, counts
    assert sum(counts.values()) == report["rounds_run"] * AFTER_CONCURRENCY
    assert phase["max_ms"] < 5000  # far below the 10 s write wait


@pytest.mark.services
@pytest.mark.slow
def test_decompression_bombs_are_refused_with_a_reason(report: dict) -> None:
    batch, single = report["phases"]["bomb_batch"], report["phases"]["bomb_single"]
    assert set(batch["status_counts"]) <= {"413", "422"}, batch
    assert "SIMSTREAM_API_MAX_BATCH_IMAGES" in batch["detail"]
    total = report["rounds_run"] * BOMBS
    _answered_or_shed(single["status_counts"], "422", total, total // 2)
    assert "decompression bomb" in single["detail"]


@pytest.mark.services
@pytest.mark.slow
def test_random_ef_lookups_succeed_unless_the_attackers_budget_sheds_them(report: dict) -> None:
    counts = report["phases"]["random_ef"]["status_counts"]
    total = report["rounds_run"] * EF_REQUESTS
    _answered_or_shed(counts, "200", total, total // 2)
