"""One suggestion rule on planted neighbours (issue 22): a suggestion is drawn from the same number of
labelled cases (the calibrated one, else `suggest.NEIGHBOURS`) whatever number of cases is listed; each
default threshold has its own effect; only labelled cases are evidence; a red-flag condition among those
cases makes the answer carry `refer`; similarity comes with a named band."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scinsearch import referral, rules, suggest
from scinsearch.calibration import Calibration, save_calibration
from scinsearch.schema import point_id_for
from scinsearch.search import Searcher
from scinsearch.search_filters import SearchFilters, SearchOptions
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, StoredPoint, open_store

DIM = 64
MODEL = "planted-model"
QUERY = np.eye(DIM, dtype=np.float32)[0]


def at_similarity(similarity: float, axis: int) -> np.ndarray:
    """A unit vector whose cosine with QUERY is `similarity` (its own axis keeps cases apart)."""
    return (similarity * np.eye(DIM)[0] + math.sqrt(1 - similarity**2) * np.eye(DIM)[axis]).astype(np.float32)


def planted(cases: list[tuple[float, dict]]) -> list[StoredPoint]:
    """One image per case, at the given similarity to QUERY, with the given weighted labels ({} = unlabelled)."""
    points = []
    for number, (similarity, labels) in enumerate(cases, start=1):
        image_id = f"img{number}"
        payload = {
            "image_id": image_id,
            "case_id": f"case{number}",
            "case_ids": [f"case{number}"],
            "condition": max(labels, key=labels.get) if labels else None,
            "weighted_labels": labels,
            "conditions": list(labels),
            "labelled": bool(labels),
            "split": "train",
        }
        points.append(StoredPoint(point_id_for(image_id), payload, at_similarity(similarity, number)))
    return points


def searcher_over(tmp_path, cases, neighbours: int | None = None) -> Searcher:
    """A searcher over the planted cases; with `neighbours`, the collection carries a calibration drawn
    from that many cases (thresholds loose enough to let the vote decide)."""
    settings = Settings(qdrant_path=tmp_path / "q", collection="planted")
    store = open_store(settings)
    store.create(CollectionInfo(MODEL, DIM, {}))
    store.upsert(planted(cases))
    store.finish_writes()
    if neighbours is not None:
        thresholds = {"min_similarity": 0.5, "min_agreement": 0.3, "min_support": 2, "k": neighbours}
        save_calibration(store, Calibration(MODEL, DIM, thresholds, {"cut": -1.0, "percentile": 5, "images": 9}))
    embedder = type("E", (), {"model_name": MODEL, "dim": DIM})()
    return Searcher(settings, embedder=embedder, store=store)


def photo_search(searcher: Searcher, top_k: int, filters: SearchFilters | None = None):
    return searcher.search_vector(QUERY, {"kind": "image"}, filters, SearchOptions(top_k=top_k))


# The five closest cases say Eczema; the next seven Urticaria (so 7 of 12); unlabelled cases lie between.
SPLIT = [(0.99 - 0.01 * i, {"Eczema": 1.0}) for i in range(5)]
SPLIT += [(0.93 - 0.01 * i, {}) for i in range(3)]
SPLIT += [(0.89 - 0.01 * i, {"Urticaria": 1.0}) for i in range(7)]


@pytest.mark.parametrize(("calibrated_for", "expected"), [(None, "Eczema"), (5, "Eczema"), (12, "Urticaria")])
def test_the_suggestion_is_drawn_from_one_number_of_cases_whatever_is_listed(tmp_path, calibrated_for, expected):
    """Today's rule drew it from the cases listed: Eczema at top_k=5, Urticaria at top_k=15."""
    with searcher_over(tmp_path, SPLIT, calibrated_for) as searcher:
        drawn = calibrated_for or suggest.NEIGHBOURS
        for top_k in (1, 3, 5, 12, 15, 20):
            result = photo_search(searcher, top_k)
            answer = result.to_dict()["suggestions"]
            assert len(result.results) == top_k or top_k == 20, "listing is independent of the rule"
            assert answer["confident"] and answer["conditions"][0]["condition"] == expected, top_k
            assert answer["neighbours"] == drawn == answer["labelled_neighbours"], "unlabelled cases are no evidence"
            assert answer["thresholds_source"] == ("calibrated" if calibrated_for else "default")


def test_calibrate_and_evaluate_default_to_the_one_setting():
    from scinsearch.calibration.calibrate import calibrate_collection
    from scinsearch.calibration.record import suggestion_neighbours
    from scinsearch.commands.calibrate_cmds import calibrate

    assert next(p for p in calibrate.params if p.name == "k").default == suggest.NEIGHBOURS
    assert calibrate_collection.__defaults__[1] == suggest.NEIGHBOURS  # (target_precision, k, ...)
    assert suggestion_neighbours(None) == suggest.NEIGHBOURS
    calibrated = Calibration(MODEL, DIM, {"k": 12, "min_similarity": 0, "min_agreement": 0, "min_support": 1}, {})
    assert suggestion_neighbours(calibrated) == 12


# Each default threshold, with the defaults in force (an uncalibrated collection) --------------------------


def close_cases(*labels: dict, similarity: float = 0.95) -> list[tuple[float, dict]]:
    return [(similarity - 0.001 * i, label) for i, label in enumerate(labels)]


@pytest.mark.parametrize(
    ("similarity", "confident"), [(suggest.MIN_SIMILARITY - 0.05, False), (suggest.MIN_SIMILARITY + 0.05, True)]
)
def test_the_default_similarity_threshold_alone_decides(tmp_path, similarity, confident):
    cases = close_cases(*[{"Eczema": 1.0}] * 5, similarity=similarity)
    with searcher_over(tmp_path, cases) as searcher:
        answer = photo_search(searcher, 5).suggestions
    assert answer.confident is confident
    assert confident or answer.reason.startswith(suggest.NOT_SIMILAR)


@pytest.mark.parametrize(("share", "confident"), [(0.30, False), (0.40, True)])
def test_the_default_agreement_threshold_alone_decides(tmp_path, share, confident):
    """Five close cases all carry Eczema (support 5), each with another condition of its own: Eczema's share
    of the vote is `share`, around the default 35 %."""
    labels = [{"Eczema": share, f"Other {i}": 1 - share} for i in range(5)]
    with searcher_over(tmp_path, close_cases(*labels)) as searcher:
        answer = photo_search(searcher, 5).suggestions
    assert answer.top.condition == "Eczema" and answer.top.support == 5
    assert answer.confident is confident and (confident or answer.reason.startswith(suggest.DISAGREE))


def test_close_cases_split_between_conditions_give_no_suggestion(tmp_path):
    cases = close_cases(*[{"Eczema": 1.0}, {"Urticaria": 1.0}, {"Tinea": 1.0}, {"Psoriasis": 1.0}, {"Acne": 1.0}])
    with searcher_over(tmp_path, cases) as searcher:
        answer = photo_search(searcher, 5).suggestions
    assert not answer.confident and answer.reason.startswith(suggest.DISAGREE)


@pytest.mark.parametrize(("second", "confident"), [({"Urticaria": 1.0}, False), ({"Eczema": 1.0}, True)])
def test_the_default_support_threshold_alone_decides(tmp_path, second, confident):
    """Two labelled cases: the top one has over half the vote, but alone it is an anecdote."""
    with searcher_over(tmp_path, close_cases({"Eczema": 1.0}, second)) as searcher:
        answer = photo_search(searcher, 5).suggestions
    assert answer.top.condition == "Eczema" and answer.top.score > suggest.MIN_AGREEMENT
    assert answer.confident is confident and (confident or answer.reason.startswith(suggest.DISAGREE))


# Labelled evidence ------------------------------------------------------------------------------------------


def test_labelled_only_fills_top_k_from_the_store_and_the_default_lists_every_case(tmp_path):
    with searcher_over(tmp_path, SPLIT) as searcher:
        labelled = photo_search(searcher, 10, SearchFilters(labelled_only=True))
        everything = photo_search(searcher, 10)
    assert len(labelled.results) == 10 and all(n.weighted_labels for n in labelled.results)
    assert sum(not n.weighted_labels for n in everything.results) == 3, "the Python API keeps every case"
    assert labelled.to_dict()["query"]["filters"] == {"labelled_only": True}


# Red flags ----------------------------------------------------------------------------------------------------


def test_a_red_flag_among_the_drawn_cases_refers_even_when_the_suggestion_abstains(tmp_path):
    cases = close_cases(
        {"Eczema": 1.0}, {"Herpes Zoster": 0.6, "Eczema": 0.4}, {"Urticaria": 1.0}, {"Tinea": 1.0}, {"Acne": 1.0}
    )
    cases += [(0.5, {"Melanoma": 1.0})]  # listed at top_k=6, but not among the cases a suggestion is drawn from
    with searcher_over(tmp_path, cases) as searcher:
        result = photo_search(searcher, 6)
    refer = result.to_dict()["refer"]
    assert not result.suggestions.confident, "the vote is split"
    from scinsearch.commands.search_cmds import format_result

    assert format_result(result).splitlines()[2].startswith("!! REFER: Among the similar cases")
    why = referral.flagged("Herpes Zoster")["why"]
    assert refer["conditions"] == [{"condition": "Herpes Zoster", "flag": "Herpes zoster", "why": why, "cases": 1}]
    assert refer["cases"] == 1 and refer["of"] == suggest.NEIGHBOURS
    assert refer["reason"] == referral.red_flags()["reason"]


def test_no_red_flag_no_refer(tmp_path):
    with searcher_over(tmp_path, close_cases(*[{"Eczema": 1.0}] * 5)) as searcher:
        assert photo_search(searcher, 5).to_dict()["refer"] is None


def test_the_red_flag_list_is_one_reviewed_data_file_with_scin_spellings():
    flags = referral.red_flags()
    assert "clinical review" in flags["_status"]
    names = {entry["name"].lower() for entry in flags["conditions"]}
    for wanted in ("melanoma", "basal cell carcinoma", "squamous cell carcinoma", "cellulitis", "herpes zoster"):
        assert wanted in names
    assert referral.flagged("herpes zoster") is referral.flagged("Herpes Zoster") is not None
    assert referral.flagged("Drug Rash")["name"] == "Drug reaction" and referral.flagged("Eczema") is None


# Similarity in words ------------------------------------------------------------------------------------------


def test_similarity_bands_are_named_from_one_table_for_each_kind_of_query(tmp_path):
    assert [rules.similarity_band(s) for s in (0.95, 0.85, 0.65, 0.2)] == ["very_close", "close", "somewhat", "distant"]
    assert rules.similarity_band(0.12, "text") == "somewhat" and rules.similarity_band(0.12) == "distant"
    assert dict(rules.SIMILARITY_BANDS)["somewhat"] == suggest.MIN_SIMILARITY
    assert dict(rules.TEXT_SIMILARITY_BANDS)["somewhat"] == suggest.TEXT_MIN_SIMILARITY
    with searcher_over(tmp_path, SPLIT) as searcher:
        shown = photo_search(searcher, 15).to_dict()["results"]
    assert [r["similarity_band"] for r in shown] == [rules.similarity_band(r["score"]) for r in shown]
    assert shown[0]["similarity_band"] == "very_close" and shown[-1]["similarity_band"] == "close"


def test_the_glossary_is_one_draft_data_file_served_to_the_page():
    from fastapi.testclient import TestClient

    from scinsearch.glossary import glossary, plain_name
    from scinsearch.service import ServiceSettings, create_app
    from scinsearch.service.app import STATIC_DIR

    entries = glossary()
    languages = {path.stem for path in (STATIC_DIR / "i18n").glob("*.json")}
    assert entries and all("en" in names and set(names) <= languages for names in entries.values())
    assert plain_name("O/E - ecchymoses present") == "Bruises seen on examination"
    assert (
        plain_name("Herpes Zoster", "fr").startswith("Zona") and plain_name("Eczema", "xx") == entries["Eczema"]["en"]
    )
    assert plain_name("A label nobody wrote down") is None
    flagged_with_a_name = [
        e["spellings"][0] for e in referral.red_flags()["conditions"] if e["spellings"][0] in entries
    ]
    assert {"Melanoma", "Basal Cell Carcinoma", "Herpes Zoster", "Drug Rash", "Cellulitis"} <= set(flagged_with_a_name)
    app = create_app(ServiceSettings(warm_up=False), searcher=object())
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/filters").json()["glossary"] == entries
