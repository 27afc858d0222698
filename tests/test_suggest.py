"""The suggestion rule: a similarity-weighted vote that abstains, with a reason, when evidence is weak."""

from __future__ import annotations

import json

import pytest

from scinsearch.suggest import (
    DISAGREE,
    NO_LABELS,
    NO_NEIGHBOURS,
    NOT_SIMILAR,
    ConditionSuggestion,
    normalised_labels,
    suggest_conditions,
)


def test_agreeing_similar_neighbours_give_a_confident_ranked_suggestion():
    neighbours = [(0.9, {"Eczema": 0.67, "Tinea": 0.33}), (0.85, {"Eczema": 1.0}), (0.8, {"Psoriasis": 1.0})]
    result = suggest_conditions(neighbours)
    assert result.confident
    assert [item.condition for item in result.items] == ["Eczema", "Psoriasis", "Tinea"]
    eczema = result.items[0]
    assert eczema.support == 2
    assert eczema.score == pytest.approx((0.9 * 0.67 + 0.85) / (0.9 + 0.85 + 0.8))
    assert eczema.best_similarity == pytest.approx(0.9)
    assert sum(item.score for item in result.items) == pytest.approx(1.0)
    assert "Eczema" in result.reason


def test_unlabelled_neighbours_dilute_the_vote_but_add_no_condition():
    labelled_only = suggest_conditions([(0.9, {"Eczema": 1.0}), (0.9, {"Eczema": 1.0})])
    diluted = suggest_conditions([(0.9, {"Eczema": 1.0}), (0.9, {"Eczema": 1.0}), (0.9, {}), (0.9, {})])
    assert labelled_only.items[0].score == pytest.approx(1.0)
    assert diluted.items[0].score == pytest.approx(0.5)
    assert [item.condition for item in diluted.items] == ["Eczema"]
    assert diluted.labelled_neighbours == 2 and diluted.neighbours == 4
    assert sum(item.score for item in diluted.items) <= 1.0


def test_low_similarity_abstains_with_the_reason():
    result = suggest_conditions([(0.3, {"Eczema": 1.0}), (0.25, {"Eczema": 1.0})], min_similarity=0.6)
    assert not result.confident
    assert result.reason.startswith(NOT_SIMILAR)
    assert result.items, "the weak ranking is still computed, for evaluation"
    assert result.to_dict()["conditions"] == []
    assert result.to_dict(include_unconfident=True)["conditions"][0]["condition"] == "Eczema"


def test_disagreeing_neighbours_abstain():
    neighbours = [(0.9, {name: 1.0}) for name in ("Eczema", "Tinea", "Psoriasis", "Urticaria", "Insect Bite")]
    result = suggest_conditions(neighbours)
    assert not result.confident
    assert result.reason.startswith(DISAGREE)


def test_a_single_supporting_neighbour_is_not_agreement():
    result = suggest_conditions([(0.95, {"Eczema": 1.0})])
    assert not result.confident and result.reason.startswith(DISAGREE)
    assert suggest_conditions([(0.95, {"Eczema": 1.0})], min_support=1).confident


def test_no_neighbours_and_no_labels_abstain():
    assert suggest_conditions([]).reason == NO_NEIGHBOURS
    unlabelled = suggest_conditions([(0.99, {}), (0.98, {})])
    assert unlabelled.reason == NO_LABELS and not unlabelled.items and not unlabelled.confident


def test_thresholds_are_parameters_and_reported():
    neighbours = [(0.5, {"Eczema": 1.0}), (0.5, {"Eczema": 0.5, "Tinea": 0.5})]
    assert not suggest_conditions(neighbours).confident
    swept = suggest_conditions(neighbours, min_similarity=0.4, min_agreement=0.7, min_support=2)
    assert swept.confident
    assert swept.to_dict()["thresholds"] == {"min_similarity": 0.4, "min_agreement": 0.7, "min_support": 2}
    assert len(suggest_conditions(neighbours, max_suggestions=1).items) == 1


def test_negative_similarity_gives_no_weight_and_bad_weights_are_ignored():
    result = suggest_conditions(
        [(-0.2, {"Tinea": 1.0}), (0.9, {"Eczema": 1.0, "Bad": float("nan")}), (0.9, {"Eczema": 2.0, "": 1.0})]
    )
    assert result.items[0] == ConditionSuggestion("Eczema", 1.0, 2, 0.9)
    assert result.items[1].condition == "Tinea" and result.items[1].score == 0.0
    assert normalised_labels({"A": 3.0, "B": 1.0, "C": -1, "D": True}) == {"A": 0.75, "B": 0.25}


def test_to_dict_is_json_serialisable():
    payload = suggest_conditions([(0.9, {"Eczema": 1.0}), (0.8, {"Eczema": 1.0})]).to_dict()
    assert json.loads(json.dumps(payload))["confident"] is True
    assert set(payload) >= {"confident", "reason", "conditions", "neighbours", "labelled_neighbours", "thresholds"}


def test_json_form_rounds_to_four_places_and_names_the_method():
    item = ConditionSuggestion("Eczema", 0.123456, 3, 0.987654)
    assert item.to_dict() == {"condition": "Eczema", "score": 0.1235, "support": 3, "best_similarity": 0.9877}
    payload = suggest_conditions([(0.9, {"Eczema": 1.0}), (0.8, {"Eczema": 1.0})]).to_dict()
    assert payload["method"] == "similarity-weighted vote of the neighbours' dermatologist label weights"
    assert payload["conditions"] == [{"condition": "Eczema", "score": 1.0, "support": 2, "best_similarity": 0.9}]
    assert (payload["neighbours"], payload["labelled_neighbours"]) == (2, 2)


def test_label_weights_are_cleaned_before_they_are_normalised():
    assert normalised_labels({"A": "x", "B": 1.0}) == {"B": 1.0}  # a bad weight skips that label only
    assert normalised_labels({"A": 0, "B": 1.0}) == {"B": 1.0}  # a zero weight is no label
    assert normalised_labels({" A": 1.0, "A ": 1.0, "B": 2.0}) == {"A": 0.5, "B": 0.5}  # same name once stripped
    assert normalised_labels({"A": 0.0}) == {} and normalised_labels(None) == {}


def test_neighbours_without_usable_similarity_carry_no_weight():
    result = suggest_conditions([(float("nan"), {"Tinea": 1.0}), (0.5, {"Eczema": 1.0})], min_support=1)
    assert [(i.condition, i.score) for i in result.items] == [("Eczema", 1.0), ("Tinea", 0.0)]
    dissimilar = suggest_conditions([(-0.2, {"Tinea": 1.0}), (0.0, {"Eczema": 1.0})])
    assert [i.score for i in dissimilar.items] == [0.0, 0.0] and not dissimilar.confident


def test_equal_shares_rank_the_better_supported_condition_first():
    result = suggest_conditions([(0.5, {"Acne": 1.0}), (0.25, {"Zoster": 1.0}), (0.25, {"Zoster": 1.0})])
    assert [(i.condition, i.score, i.support) for i in result.items] == [("Zoster", 0.5, 2), ("Acne", 0.5, 1)]


def test_no_neighbours_is_never_confident_and_no_suggestions_can_be_asked_for():
    assert not suggest_conditions([]).confident and suggest_conditions([]).items == []
    assert suggest_conditions([(0.9, {"Eczema": 1.0})] * 3, max_suggestions=0).items == []


def test_thresholds_are_inclusive():
    neighbours = [(0.5, {"Eczema": 1.0}), (0.5, {"Eczema": 0.5, "Tinea": 0.5})]
    top_share = 0.75  # (0.5 * 1 + 0.5 * 0.5) / 1.0
    assert suggest_conditions(neighbours, min_similarity=0.5, min_agreement=top_share, min_support=2).confident
    assert not suggest_conditions(neighbours, min_similarity=0.51, min_agreement=top_share, min_support=2).confident
    assert not suggest_conditions(neighbours, min_similarity=0.5, min_agreement=0.76, min_support=2).confident
    assert not suggest_conditions(neighbours, min_similarity=0.5, min_agreement=top_share, min_support=3).confident
