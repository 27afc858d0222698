"""SCIN's text cells, one rule at a time: every branch, every boundary, every message (pure and fast;
written to kill the meaningful survivors of mutation testing, see docs/testing.md)."""

from __future__ import annotations

import pytest

from scinsearch import cells


@pytest.mark.parametrize("value", [None, float("nan"), "", "  ", "nan", " NaN ", "None", "null", "<NA>", "NaT"])
def test_missing_spellings(value):
    assert cells.is_missing(value) and cells.text(value) is None


@pytest.mark.parametrize("value, text", [("0", "0"), (" x ", "x"), (0, "0"), ("False", "False")])
def test_present_values_are_stripped_text(value, text):
    assert not cells.is_missing(value) and cells.text(value) == text


def test_literal_size_limit_is_inclusive():
    at_limit = "[" + " " * (cells.MAX_CELL_CHARS - 2) + "]"
    assert len(at_limit) == cells.MAX_CELL_CHARS and cells.parse_string_list(at_limit) == []
    over = "[" + " " * (cells.MAX_CELL_CHARS - 1) + "]"
    with pytest.raises(cells.CellError, match=rf"^value is {len(over)} characters long \(limit 20000\)$"):
        cells.parse_string_list(over)


def test_literal_errors_say_what_was_wrong():
    with pytest.raises(cells.CellError, match=r"^not a Python literal: \"\['a'\"$"):
        cells.parse_string_list("['a'")
    with pytest.raises(cells.CellError, match=r"^expected a list, got dict: \"\{'a': 1\}\"$"):
        cells.parse_string_list("{'a': 1}")
    with pytest.raises(cells.CellError, match="^list holds non-text items$"):
        cells.parse_string_list("['a', 1]")
    assert cells.parse_string_list("[' Eczema ', 'Acute dermatitis, NOS']") == ["Eczema", "Acute dermatitis, NOS"]


def test_weighted_labels_heaviest_first_then_by_name():
    assert list(cells.parse_weighted_labels("{'Acne': 0.2, 'Zoster': 0.8}")) == ["Zoster", "Acne"]
    assert list(cells.parse_weighted_labels("{'B': 0.5, 'A': 0.5, 'C': 0.0}")) == ["A", "B", "C"]
    assert cells.parse_weighted_labels("{' Tinea ': 1}") == {"Tinea": 1.0}
    assert cells.parse_weighted_labels("") == {}


@pytest.mark.parametrize(
    "cell, message",
    [
        ("{1: 0.5}", "label name 1 is not text"),
        ("{'  ': 0.5}", "label name '  ' is not text"),
        ("{'A': -0.1}", "weight -0.1 of 'A' is not a non-negative number"),
        ("{'A': True}", "weight True of 'A' is not a non-negative number"),
        ("{'A': 'x'}", "weight 'x' of 'A' is not a non-negative number"),
        ("{'A': float('inf')}", "not a Python literal"),
    ],
)
def test_weighted_labels_refuse_bad_entries(cell, message):
    with pytest.raises(cells.CellError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cells.parse_weighted_labels(cell)


def test_integer_lists():
    assert cells.parse_int_list("[4, 3, 4]") == [4, 3, 4] and cells.parse_int_list("") == []
    for bad in ("[True]", "['1']", "[1.5]"):
        with pytest.raises(cells.CellError, match="^list holds non-integer items$"):
            cells.parse_int_list(bad)


def test_integers():
    assert cells.parse_int(" 3 ") == 3 and cells.parse_int("3.0") == 3 and cells.parse_int("-2") == -2
    assert cells.parse_int("nan") is None
    with pytest.raises(cells.CellError, match="^not a number: 'three'$"):
        cells.parse_int("three")
    for bad in ("3.5", "inf", "-inf"):
        with pytest.raises(cells.CellError, match=f"^not a whole number: '{bad}'$"):
            cells.parse_int(bad)


@pytest.mark.parametrize("cell", ["True", "true", "YES", "yes", "1"])
def test_yes(cell):
    assert cells.parse_bool(cell) is True


@pytest.mark.parametrize("cell", ["False", "false", "NO", "no", "0"])
def test_no(cell):
    assert cells.parse_bool(cell) is False


def test_neither_yes_nor_no():
    assert cells.parse_bool("") is None
    with pytest.raises(cells.CellError, match="^not a yes/no value: 'maybe'$"):
        cells.parse_bool("maybe")


@pytest.mark.parametrize(
    "cell, value",
    [
        ("YES", True),
        ("True", True),
        ("TRUE", True),
        ("true", True),
        ("NO", False),
        ("False", False),
        ("FALSE", False),
        ("false", False),
        ("yes", "yes"),  # only the release's own spellings are booleans
        ("2023", 2023),
        ("4.0", 4),
        ("[1, 'a']", [1, "a"]),
        ("{'a': 1}", {"a": 1}),
        ("{1, 2}", "{1, 2}"),  # a set is not a payload type
        ("[broken", "[broken"),
        ("x[1]", "x[1]"),
        ("(1, 2)", "(1, 2)"),
        ("ONE_TO_FOUR_WEEKS", "ONE_TO_FOUR_WEEKS"),
        ("", None),
    ],
)
def test_generic_values(cell, value):
    assert cells.generic_value(cell) == value and type(cells.generic_value(cell)) is type(value)


def test_generic_oversized_literal_stays_text():
    huge = "[" + "1, " * cells.MAX_CELL_CHARS + "1]"
    assert cells.generic_value(huge) == huge
    at_limit = "[" + " " * (cells.MAX_CELL_CHARS - 2) + "]"
    assert cells.generic_value(at_limit) == []


def test_primary_condition():
    assert cells.primary_condition({"Tinea": 0.7, "Eczema": 0.3}, ["Eczema"]) == "Tinea"
    assert cells.primary_condition({}, ["Eczema", "Tinea"]) == "Eczema"
    assert cells.primary_condition({}, []) is None


@pytest.mark.parametrize(
    "label, number", [("FST1", 1), ("fst3", 3), ("FST6", 6), ("FST0", None), ("FST7", None), ("NONE_IDENTIFIED", None)]
)
def test_fitzpatrick_numbers(label, number):
    assert cells.fitzpatrick_number(label) == number


@pytest.mark.parametrize(
    "label, group",
    [("FST1", "I-II"), ("FST2", "I-II"), ("FST3", "III-IV"), ("FST4", "III-IV"), ("FST5", "V-VI"), ("FST6", "V-VI")]
    + [("FST7", "unknown"), (None, "unknown"), ("NONE_IDENTIFIED", "unknown")],
)
def test_skin_type_groups(label, group):
    assert cells.skin_type_group(label) == group


def test_dermatologist_median_rounds_down():
    assert cells.dermatologist_skin_type(["FST2", "FST5"]) == "FST2"
    assert cells.dermatologist_skin_type(["FST4", "NONE", "FST6", "FST5"]) == "FST5"
    assert cells.dermatologist_skin_type(["", "x"]) is None


@pytest.mark.parametrize(
    "tone, group",
    [(1, "1-3"), (3, "1-3"), (4, "4-6"), (6, "4-6"), (7, "7-10"), (10, "7-10")]
    + [(0, "unknown"), (11, "unknown"), (None, "unknown")],
)
def test_monk_tone_groups_at_every_boundary(tone, group):
    assert cells.monk_tone_group(tone) == group


def test_humanize():
    assert cells.humanize("AGE_30_TO_39") == "age 30 to 39"
    assert cells.humanize("") is None and cells.humanize(None) is None
