"""Search filters: every accepted spelling, the store filter they become, the errors and their code (pure
and fast; written to kill the meaningful survivors of mutation testing, see docs/testing.md)."""

from __future__ import annotations

import pytest

from scinsearch.errors import BAD_FILTER, ScinSearchError
from scinsearch.schema import AGE_GROUPS
from scinsearch.search_filters import SearchFilters, as_tuple, body_part
from scinsearch.store import Filter, Match, Range


@pytest.mark.parametrize("spelling", ["FST5", "fst5", " 5 ", "V", "v"])
def test_fitzpatrick_spellings(spelling):
    assert SearchFilters(fitzpatrick=spelling).fitzpatrick == ("FST5",)
    assert SearchFilters(dermatologist_fitzpatrick=spelling).dermatologist_fitzpatrick == ("FST5",)


def test_none_identified_is_self_reported_only():
    assert SearchFilters(fitzpatrick="none").fitzpatrick == ("NONE_IDENTIFIED",)
    assert SearchFilters(fitzpatrick="none_identified").fitzpatrick == ("NONE_IDENTIFIED",)
    with pytest.raises(ScinSearchError) as refused:
        SearchFilters(dermatologist_fitzpatrick="none")
    assert str(refused.value) == (
        "unknown dermatologist Fitzpatrick skin type 'none': use one of FST1, FST2, FST3, FST4, FST5, FST6"
    )
    assert refused.value.code == BAD_FILTER


@pytest.mark.parametrize(
    "spelling, group",
    [
        ("AGE_30_TO_39", "AGE_30_TO_39"),
        ("30_to_39", "AGE_30_TO_39"),
        ("30-39", "AGE_30_TO_39"),
        ("30 to 39", "AGE_30_TO_39"),
        ("age-18-to-29", "AGE_18_TO_29"),
        ("80+", "AGE_80_OR_ABOVE"),
        ("80_or_above", "AGE_80_OR_ABOVE"),
        ("unknown", "AGE_UNKNOWN"),
    ],
)
def test_age_spellings(spelling, group):
    assert SearchFilters(age_groups=spelling).age_groups == (group,)


@pytest.mark.parametrize(
    "spelling, sex",
    [
        ("f", "FEMALE"),
        ("Female", "FEMALE"),
        ("m", "MALE"),
        ("other", "OTHER_OR_UNSPECIFIED"),
        ("unspecified", "OTHER_OR_UNSPECIFIED"),
    ],
)
def test_sex_spellings(spelling, sex):
    assert SearchFilters(sexes=spelling).sexes == (sex,)


def test_split_spellings_and_duplicates():
    assert SearchFilters(splits="validation, TRAIN, val").splits == ("val", "train")


def test_unknown_values_name_the_valid_ones():
    with pytest.raises(ScinSearchError) as refused:
        SearchFilters(age_groups="teen")
    assert str(refused.value) == f"unknown age group 'teen': use one of {', '.join(AGE_GROUPS)}"
    assert refused.value.code == BAD_FILTER
    with pytest.raises(
        ScinSearchError, match="^unknown sex at birth 'x': use one of FEMALE, MALE, OTHER_OR_UNSPECIFIED$"
    ):
        SearchFilters(sexes="x")


@pytest.mark.parametrize(
    "value, canonical", [("Head or neck", "head_or_neck"), (" foot-sole ", "foot_sole"), ("ARM", "arm")]
)
def test_body_parts_become_the_release_column_suffix(value, canonical):
    assert body_part(value) == canonical and SearchFilters(body_parts=value).body_parts == (canonical,)


def test_as_tuple_splits_flags_but_conditions_keep_their_commas():
    assert as_tuple(None) == () and as_tuple("a, b") == ("a", "b") and as_tuple(["a", "b,c", " "]) == ("a", "b", "c")
    assert SearchFilters(conditions="Acute dermatitis, NOS").conditions == ("Acute dermatitis, NOS",)
    assert SearchFilters(conditions=[" Eczema ", "Eczema"]).conditions == ("Eczema",)
    for bad in (["  "], [3]):
        with pytest.raises(ScinSearchError, match="^empty condition filter: give a condition name$") as refused:
            SearchFilters(conditions=bad)
        assert refused.value.code == BAD_FILTER


@pytest.mark.parametrize("low, high", [(1, 10), (1, 1), (10, 10), (4, None), (None, 4)])
def test_monk_bounds_that_are_accepted(low, high):
    filters = SearchFilters(monk_min=low, monk_max=high)
    assert filters.to_store_filter() == Filter(must=(Range("monk_skin_tone_label_us", gte=low, lte=high),))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"monk_min": 0}, "monk-min 0 is not a Monk skin tone: use 1 to 10"),
        ({"monk_max": 11}, "monk-max 11 is not a Monk skin tone: use 1 to 10"),
        ({"monk_min": True}, "monk-min True is not a Monk skin tone: use 1 to 10"),
        ({"monk_max": 3.5}, "monk-max 3.5 is not a Monk skin tone: use 1 to 10"),
        ({"monk_min": 7, "monk_max": 3}, "monk-min 7 is above monk-max 3"),
    ],
)
def test_monk_bounds_that_are_refused(options, message):
    with pytest.raises(ScinSearchError) as refused:
        SearchFilters(**options)
    assert str(refused.value) == message and refused.value.code == BAD_FILTER


def test_the_store_filter_of_every_restriction():
    filters = SearchFilters(
        fitzpatrick="5,6",
        dermatologist_fitzpatrick="III",
        monk_min=2,
        monk_max=9,
        age_groups="30-39",
        sexes="f",
        body_parts="arm",
        conditions="Eczema",
        splits="test",
        gradable_only=True,
    )
    assert filters.to_store_filter() == Filter(
        must=(
            Match("fitzpatrick_skin_type", ("FST5", "FST6")),
            Match("dermatologist_fitzpatrick_skin_type", ("FST3",)),
            Match("age_group", ("AGE_30_TO_39",)),
            Match("sex_at_birth", ("FEMALE",)),
            Match("body_parts", ("arm",)),
            Match("conditions", ("Eczema",)),
            Match("split", ("test",)),
            Range("monk_skin_tone_label_us", gte=2, lte=9),
            Match("gradable", (True,)),
        )
    )
    assert SearchFilters().to_store_filter() == Filter() and not SearchFilters()
    assert SearchFilters(gradable_only=True).to_store_filter() == Filter(must=(Match("gradable", (True,)),))


def test_free_text_values_are_listed_for_the_store_check():
    filters = SearchFilters(conditions=("Eczema", "Tinea"), body_parts="arm")
    assert filters.free_text() == [
        ("condition", "conditions", "Eczema"),
        ("condition", "conditions", "Tinea"),
        ("body part", "body_parts", "arm"),
    ]
    assert SearchFilters(fitzpatrick="5").free_text() == []


def test_to_dict_has_only_the_restrictions_in_force():
    assert SearchFilters().to_dict() == {}
    assert SearchFilters(fitzpatrick="5", monk_min=3, gradable_only=True).to_dict() == {
        "fitzpatrick": ["FST5"],
        "monk_min": 3,
        "gradable_only": True,
    }
