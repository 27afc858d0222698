"""The filter registry: each filter declared once in `search_filters.FILTERS` reaches every surface (the
SearchFilters field, the `scinsearch search` flag, the service's OpenAPI parameter with its text, the
kiosk page's menus), and means the same thing on each; `SearchOptions` is the one check of top_k and
min_score. Pure and fast: no model, no store."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from scinsearch import rules
from scinsearch.commands.search_cmds import search as search_command
from scinsearch.errors import BAD_FILTER, BAD_REQUEST, ScinSearchError
from scinsearch.search_filters import FILTERS, FLAG, HIGHEST, LOWEST, NAMES, PAGE_MENUS, SearchFilters, SearchOptions
from scinsearch.service import ServiceSettings, create_app
from scinsearch.service.params import build_filters

SEARCH_ROUTES = (("/search", "post"), ("/search/text", "post"), ("/images/{image_id}/similar", "get"))
SAMPLE = {  # (flag arguments, HTTP text values, Python value) giving the same restriction, per kind
    "choices": lambda spec: ([spec.vocabulary[0]], [spec.vocabulary[0]], spec.vocabulary[0]),
    "words": lambda spec: (["arm"], ["arm"], "arm"),
    "names": lambda spec: (["Acute dermatitis, NOS"], ["Acute dermatitis, NOS"], ("Acute dermatitis, NOS",)),
    "lowest": lambda spec: (["3"], ["3"], 3),
    "highest": lambda spec: (["7"], ["7"], 7),
    "flag": lambda spec: ([], ["true"], True),
}


@pytest.fixture(scope="module")
def openapi():
    app = create_app(ServiceSettings(warm_up=False), searcher=object())
    with TestClient(app, base_url="http://localhost") as client:
        yield client.get("/openapi.json").json()


def test_every_surface_has_exactly_the_registered_filters(openapi):
    names = [spec.name for spec in FILTERS]
    assert len(set(names)) == len(names) and len({spec.flag for spec in FILTERS}) == len(names)
    assert [field.name for field in dataclasses.fields(SearchFilters)] == names
    options = {param.name: param for param in search_command.params}
    for spec in FILTERS:
        assert spec.name in options and spec.flag in options[spec.name].opts, f"no CLI flag for {spec.name}"
        assert options[spec.name].help == spec.help
    for path, method in SEARCH_ROUTES:
        parameters = {p["name"]: p for p in openapi["paths"][path][method]["parameters"] if p["in"] == "query"}
        for spec in FILTERS:
            assert spec.name in parameters, f"{method.upper()} {path} does not document {spec.name}"
            assert parameters[spec.name]["description"] == spec.help
    photo_form = openapi["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(names) <= set(photo_form["properties"])


@pytest.mark.parametrize("spec", FILTERS, ids=lambda spec: spec.name)
def test_a_filter_means_the_same_from_the_cli_the_service_and_python(spec):
    flag_arguments, http_values, python_value = SAMPLE[spec.kind](spec)
    expected = SearchFilters(**{spec.name: python_value})
    assert expected and expected.to_store_filter().must[0].key == spec.field
    context = search_command.make_context("search", [spec.flag, *flag_arguments, "--text", "x"])
    from_flags = SearchFilters(**{s.name: context.params[s.name] for s in FILTERS})
    assert from_flags == expected
    service_defaults = {s.name: s.service_default for s in FILTERS if s.service_default is not None}
    assert build_filters({spec.name: http_values}) == SearchFilters(**{**service_defaults, spec.name: python_value})


def test_the_service_lists_labelled_cases_unless_asked_while_cli_and_python_list_every_case(openapi):
    """Issue 22: one declaration (the registry) of the parameter and of its two defaults."""
    assert build_filters({}) == SearchFilters(labelled_only=True)
    assert build_filters({"labelled_only": ["false"]}) is None, "nothing restricts the search"
    assert SearchFilters().labelled_only is False
    context = search_command.make_context("search", ["--text", "x"])
    assert context.params["labelled_only"] is False
    parameter = next(p for p in openapi["paths"]["/search"]["post"]["parameters"] if p["name"] == "labelled_only")
    assert parameter["schema"] == {"type": "boolean", "default": True}


def test_the_page_menus_come_from_the_registry(openapi):
    app = create_app(ServiceSettings(warm_up=False), searcher=object())
    with TestClient(app, base_url="http://localhost") as client:
        body = client.get("/filters").json()
    assert body["menus"] == [{"name": s.name, "labels": s.menu, "values": list(s.vocabulary)} for s in PAGE_MENUS]
    assert {"fitzpatrick", "age_groups", "body_parts"} <= {menu["name"] for menu in body["menus"]}
    assert all(spec.kind not in (NAMES, FLAG, LOWEST, HIGHEST) and spec.vocabulary for spec in PAGE_MENUS)


def test_an_unknown_value_is_refused_alike_everywhere():
    with pytest.raises(ScinSearchError, match="unknown sex at birth 'x'") as direct:
        SearchFilters(sexes="x")
    with pytest.raises(ScinSearchError, match="unknown sex at birth 'x'") as served:
        build_filters({"sexes": ["x"]})
    assert direct.value.code == served.value.code == BAD_FILTER


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"top_k": 0}, f"top_k must be from 1 to {rules.MAX_TOP_K}, not 0"),
        ({"top_k": rules.MAX_TOP_K + 1}, f"top_k must be from 1 to {rules.MAX_TOP_K}, not {rules.MAX_TOP_K + 1}"),
        ({"top_k": True}, "top_k must be from 1"),
        ({"top_k": 2.0}, "top_k must be from 1"),
        ({"top_k": 51, "max_top_k": 50}, "top_k must be from 1 to 50, not 51"),
        ({"top_k": 300, "max_top_k": 10_000}, f"top_k must be from 1 to {rules.MAX_TOP_K}, not 300"),
        ({"min_score": 1.01}, "min_score must be a cosine similarity from -1 to 1, not 1.01"),
        ({"min_score": -1.5}, "min_score must be a cosine similarity from -1 to 1"),
        ({"min_score": float("nan")}, "min_score must be a cosine similarity"),
        ({"min_score": "0.5"}, "min_score must be a cosine similarity"),
    ],
)
def test_search_options_are_checked_once(arguments, message):
    with pytest.raises(ScinSearchError, match=message) as refused:
        SearchOptions(**arguments)
    assert refused.value.code == BAD_REQUEST and "\n" not in str(refused.value)


def test_search_options_accept_the_edges_and_fill_the_default():
    low, high = rules.SCORE_RANGE
    assert SearchOptions(top_k=None).top_k == rules.DEFAULT_TOP_K
    assert SearchOptions(rules.MAX_TOP_K, low).to_dict() == {
        "top_k": rules.MAX_TOP_K,
        "min_score": -1.0,
        "per_case": True,
    }
    assert SearchOptions(1, high, per_case=False).to_dict() == {"top_k": 1, "min_score": 1.0, "per_case": False}
