"""The promotion rule: recall@1 must beat the active model's by more than the margin."""

from __future__ import annotations

import pytest

from workers.retrain.decision import decide


def test_a_candidate_better_by_more_than_the_margin_is_promoted() -> None:
    decision = decide({"recall@1": 0.90}, {"recall@1": 0.80}, margin=0.05)
    assert decision.promote
    assert decision.gain == pytest.approx(0.10)


def test_a_candidate_better_by_less_than_the_margin_is_rejected() -> None:
    decision = decide({"recall@1": 0.83}, {"recall@1": 0.80}, margin=0.05)
    assert not decision.promote
    assert decision.gain == pytest.approx(0.03)
    assert "does not beat" in decision.reason


def test_a_tie_is_not_a_win_even_with_no_margin() -> None:
    assert not decide({"recall@1": 0.8}, {"recall@1": 0.8}, margin=0.0).promote


def test_a_negative_margin_accepts_a_slightly_worse_candidate() -> None:
    assert decide({"recall@1": 0.79}, {"recall@1": 0.80}, margin=-0.02).promote


def test_without_an_active_model_any_scored_candidate_is_promoted() -> None:
    decision = decide({"recall@1": 0.1}, None, margin=0.5)
    assert decision.promote
    assert decision.gain is None


@pytest.mark.parametrize(
    ("candidate", "active"),
    [({"recall@1": None}, {"recall@1": 0.5}), ({"recall@1": 0.9}, {"recall@1": None}), ({}, None)],
)
def test_a_missing_score_on_either_side_rejects_the_candidate(
    candidate: dict[str, float | None], active: dict[str, float | None] | None
) -> None:
    assert not decide(candidate, active, margin=0.0).promote
