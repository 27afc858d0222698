"""`scinsearch.explore`: the soundness checks on planted data, coverage against pandas, the map against
scikit-learn's PCA, the stratified sample, the map's cache in the collection record, the report file,
the CLI and the `/explore` routes. The page itself is tested in a browser (test_explore_browser.py)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from explore_data import INFO, clean_collection, payload, planted_collection
from scinsearch.cli import main
from scinsearch.explore import explore_points, explore_store, write_report
from scinsearch.explore.coverage import FEW_CASES, TOP_CONDITIONS, coverage
from scinsearch.explore.projection import MAP_KEY, pca_2d, project, stratified_sample
from scinsearch.explore.report import report_html
from scinsearch.service import ServiceSettings, create_app
from scinsearch.settings import Settings
from scinsearch.store import StoredPoint, open_store


def checks_of(document: dict) -> dict:
    return {check["id"]: check for check in document["checks"]}


@pytest.fixture(scope="module")
def planted():
    return planted_collection()


@pytest.fixture(scope="module")
def planted_document(planted):
    return explore_points(planted.collection.points, "planted", INFO)


# The soundness checks ---------------------------------------------------------------------------------


def test_clean_data_lists_nothing():
    checks = checks_of(explore_points(clean_collection().points, "clean", INFO))
    assert {name: check["count"] for name, check in checks.items()} == {
        "near_duplicates": 0,
        "label_noise": 0,
        "far_apart_cases": 0,
        "vector_norms": 0,
    }
    assert checks["label_noise"]["judged"] == 240  # every image was judged, none doubted


def test_a_planted_cross_case_duplicate_is_listed(planted, planted_document):
    check = checks_of(planted_document)["near_duplicates"]
    original, copy = planted.duplicate
    assert check["count"] == 1
    assert check["points"] == [[original, copy]]
    assert check["rows"][0][1] != check["rows"][0][3]  # two different cases
    assert check["rows"][0][4] == pytest.approx(1.0, abs=1e-4)


def test_planted_mislabelled_images_are_listed(planted, planted_document):
    check = checks_of(planted_document)["label_noise"]
    listed = {rows[0] for rows in check["points"]}
    assert set(planted.mislabelled) <= listed
    for row in check["rows"]:
        if row[0].startswith("wrong"):
            assert row[2:4] == ["condition-1", "condition-0"]  # its label, and its neighbours'
    # Beyond the planted ones only the other plants are doubted: the duplicate relabelled and the stranger.
    assert listed - set(planted.mislabelled) <= {planted.duplicate[1], len(planted.collection.points) - 2}


def test_a_case_whose_photos_do_not_belong_together_is_listed(planted, planted_document):
    check = checks_of(planted_document)["far_apart_cases"]
    assert [row[0] for row in check["rows"]] == [planted.far_case]


def test_a_vector_that_is_not_unit_length_is_listed(planted, planted_document):
    check = checks_of(planted_document)["vector_norms"]
    assert check["points"] == [[planted.not_unit]]
    assert check["rows"][0][1] == pytest.approx(2.0, rel=1e-5)


def test_leave_case_out_never_names_a_case_mate_as_a_neighbour(planted_document):
    points = planted_document["points"]
    for i, neighbours in enumerate(points["neighbours"]):
        assert all(points["case"][j] != points["case"][i] for j in neighbours)
        assert points["similarities"][i] == sorted(points["similarities"][i], reverse=True)


# Coverage ---------------------------------------------------------------------------------------------


def many_conditions() -> list[dict]:
    """40 conditions with 1..40 cases (2 images each) and some unlabelled images."""
    payloads, number = [], 0
    for c in range(40):
        for k in range(c + 1):
            for n in range(2):
                payloads.append(payload(f"c{c}k{k}-{n}", f"c{c}k{k}", f"condition-{c:02d}", number))
                number += 1
    payloads += [payload(f"u{k}", f"u{k}", None, k) for k in range(5)]
    return payloads


def test_coverage_counts_match_pandas():
    payloads = many_conditions()
    tables = {table["id"]: table for table in coverage(payloads)["tables"]}
    frame = pd.DataFrame(payloads).fillna({"condition": "(no dermatologist label)"})
    by_condition = frame.groupby("condition").agg(images=("image_id", "size"), cases=("case_id", "nunique"))
    rows = tables["condition"]["rows"]
    assert len(rows) == TOP_CONDITIONS + 2  # the top 30, the long tail, the unlabelled
    for name, images, cases in rows[:TOP_CONDITIONS]:
        assert (images, cases) == tuple(by_condition.loc[name])
    tail = by_condition.drop(index=[r[0] for r in rows[:TOP_CONDITIONS]] + ["(no dermatologist label)"])
    assert rows[TOP_CONDITIONS] == ["long tail: 10 more conditions", tail["images"].sum(), tail["cases"].sum()]
    assert rows[0][0] == "condition-39"  # most cases first
    exploded = frame.explode("body_parts").groupby("body_parts")["image_id"].size()
    assert {r[0]: r[1] for r in tables["body_part"]["rows"]} == exploded.to_dict()
    splits = frame.groupby("split")["case_id"].nunique()
    assert {r[0]: r[2] for r in tables["split"]["rows"]} == splits.to_dict()


def test_the_conditions_by_skin_type_table_flags_cells_under_ten_cases():
    matrix = coverage(many_conditions())["matrices"][0]
    frame = pd.DataFrame(many_conditions())
    for name, *counts in matrix["rows"]:
        expected = frame[frame.condition == name].groupby("skin_type_group")["case_id"].nunique()
        assert counts == [int(expected.get(group, 0)) for group in matrix["columns"][1:]]
    cells = [c for row in matrix["rows"] for c in row[1:4]]
    assert matrix["flagged"] == sum(1 for c in cells if c < FEW_CASES) > 0


# The map ----------------------------------------------------------------------------------------------


def test_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA

    vectors = np.stack([p.vector for p in clean_collection().points])
    ours, explained = pca_2d(vectors)
    reference = PCA(n_components=2).fit(vectors)
    theirs = reference.transform(vectors)
    for axis in range(2):
        sign = np.sign(ours[:, axis] @ theirs[:, axis])
        np.testing.assert_allclose(ours[:, axis], sign * theirs[:, axis], atol=1e-4)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-4)


def test_umap_when_the_extra_is_installed():
    pytest.importorskip("umap")
    vectors = np.stack([p.vector for p in clean_collection().points])
    result = project(vectors, "umap")
    assert result["method"] == "umap" and result["coordinates"].shape == (len(vectors), 2)
    assert np.isfinite(result["coordinates"]).all()


def test_the_sample_keeps_each_conditions_share_and_is_the_same_every_time():
    points = clean_collection(conditions=5, cases=40).points  # 400 images, 80 per condition
    groups = [p.payload["condition"] for p in points]
    ids = [p.id for p in points]
    rows = stratified_sample(groups, ids, limit=100)
    assert len(rows) == 100 and len(set(rows)) == 100
    assert pd.Series([groups[r] for r in rows]).value_counts().to_dict() == {f"condition-{c}": 20 for c in range(5)}
    np.testing.assert_array_equal(rows, stratified_sample(groups[::-1][::-1], ids, limit=100))
    assert len(stratified_sample(groups, ids, limit=1000)) == 400  # under the limit: everything


def test_above_the_limit_the_map_draws_the_sample(planted):
    document = explore_points(planted.collection.points, "planted", INFO, max_points=60)
    assert document["map"]["sampled"] and document["map"]["points"] == len(document["points"]["x"]) <= 60
    assert document["record"]["points"] == len(planted.collection.points)  # the record counts everything


# The cache, the report, the CLI -----------------------------------------------------------------------


def stored(tmp_path, points, name="explore") -> Settings:
    settings = Settings(qdrant_path=tmp_path / "store", collection=name)
    store = open_store(settings)
    try:
        store.create(INFO)
        store.upsert(points)
        store.finish_writes()
    finally:
        store.close()
    return settings


def test_the_map_is_cached_in_the_collection_record_until_the_points_change(tmp_path):
    settings = stored(tmp_path, clean_collection(conditions=3, cases=5).points)
    store = open_store(settings)
    try:
        first = explore_store(store)
        assert first["map"]["cached"] is False and MAP_KEY in store.info().extra
        second = explore_store(store)
        assert second["map"]["cached"] is True
        assert second["points"]["x"] == first["points"]["x"]
        extra = clean_collection(conditions=1, cases=1, seed=5).points[0]
        store.upsert([StoredPoint("00000000-0000-4000-8000-000000000001", extra.payload, extra.vector)])
        assert explore_store(store)["map"]["cached"] is False  # another set of points: a new map
    finally:
        store.close()


def test_the_report_is_one_file_that_fetches_nothing(planted_document, tmp_path):
    html = report_html(planted_document)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)  # no file or URL to load
    data = re.search(r'<script id="explore-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(data)["record"] == planted_document["record"]
    hostile = {**planted_document, "record": {**planted_document["record"], "collection": "</script><b>x"}}
    assert "</script><b>" not in report_html(hostile)
    out = write_report(planted_document, tmp_path / "sub" / "report.html")
    assert out.read_text(encoding="utf-8") == html


def test_explore_command_writes_the_report(tmp_path, capsys):
    planted = planted_collection()
    settings = stored(tmp_path, planted.collection.points)
    out = tmp_path / "report.html"
    args = ["--qdrant-path", str(settings.qdrant_path), "--collection", "explore", "--out", str(out)]
    assert main(["explore", *args]) == 0
    said = capsys.readouterr().out
    assert "near duplicates 1" in said and "far apart cases 1" in said and "(pca)" in said
    assert out.is_file() and "explore-data" in out.read_text(encoding="utf-8")
    assert main(["info", "--qdrant-path", str(settings.qdrant_path), "--collection", "explore"]) == 0
    info = capsys.readouterr().out
    assert "map (scinsearch explore): pca of" in info and len(info) < 4000  # the cached map is one line


def test_explore_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["explore", "--qdrant-path", str(tmp_path / "none"), "--collection", "nothing", "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 1 and error.startswith("Error: ") and error.count("\n") == 1
    assert not out.exists()


def test_map_umap_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    settings = stored(tmp_path, clean_collection(conditions=2, cases=3).points)
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    out = tmp_path / "report.html"
    args = ["--qdrant-path", str(settings.qdrant_path), "--collection", "explore", "--out", str(out)]
    assert main(["explore", "--map", "umap", *args]) == 1
    assert capsys.readouterr().err == "Error: --map umap needs the optional extra: pip install 'scinsearch[umap]'\n"
    assert not out.exists()


def test_odd_payloads_are_counted_not_fatal():
    """Payloads are untrusted: missing fields, wrong types and markup become groups, never an exception."""
    points = clean_collection(conditions=2, cases=12).points
    odd = [
        {},
        {"condition": 7, "case_ids": "abc", "body_parts": "arm", "split": None},
        {"condition": "<img src=x onerror=alert(1)>", "case_ids": [None, 3], "fitzpatrick_skin_type": ["FST1"]},
        {"condition": {"nested": True}, "monk_tone_group_us": 5, "image_id": 12},
    ]
    rng = np.random.default_rng(1)
    points += [StoredPoint(f"00000000-0000-4000-8000-00000000000{i}", p, rng.normal(size=32).astype(np.float32))
               for i, p in enumerate(odd)]  # fmt: skip
    document = explore_points(points, "odd", INFO)
    assert document["record"]["points"] == len(points) == len(document["points"]["x"])
    assert "<img src=x onerror=alert(1)>" in document["vocab"]["condition"]  # kept as text; the page sets textContent
    json.dumps(document, allow_nan=False)


# The routes -------------------------------------------------------------------------------------------


class StoreOnly:
    """The little of a `Searcher` the explore routes use: its open store."""

    def __init__(self, store):
        self.store = store


def test_explore_routes_page_public_data_keyed(tmp_path):
    settings = stored(tmp_path, clean_collection(conditions=3, cases=5).points)
    store = open_store(settings)
    try:
        app = create_app(ServiceSettings(warm_up=False, api_key="secret-key"), searcher=StoreOnly(store))
        with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
            page = client.get("/explore")
            assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
            assert client.get("/explore-assets/explore.js").status_code == 200
            refused = client.get("/explore/data")
            assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
            data = client.get("/explore/data", headers={"X-API-Key": "secret-key"})
            assert data.status_code == 200 and data.json()["record"]["points"] == 30
    finally:
        store.close()
