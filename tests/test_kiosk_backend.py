"""The kiosk backend reads our export unchanged (issue 21): `export --for kiosk-backend`.

The backend's result model and its access pattern are restated below from its source (documented in
docs/storage.md#the-kiosk-backend-profile) and run in a fresh process, as the backend would, against
the exported folder: every stored vector as a query, then new photos; every hit must validate. The
same loop over today's plain export loses hits, as the issue reports. Qdrant's own engine (a server's)
is exercised through Qdrant Edge, which runs it in-process: no Qdrant server can run here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import fill_store
from scinsearch.cli import main
from scinsearch.dataset import read_release
from scinsearch.settings import Settings
from scinsearch.store import StoredPoint, open_store
from scinsearch.store.edge import EdgeStore
from scinsearch.transfer import import_parquet
from scinsearch.transfer.kiosk_profile import (
    FALLBACK_ICD,
    ICD_TABLE,
    KIOSK_FIELD_NAMES,
    condition_key,
    load_icd_table,
)
from scinsearch.transfer.kiosk_vectors import place_vectors, self_score_problems

BACKEND = textwrap.dedent("""
    import json, sys
    from typing import List, Optional
    from pydantic import BaseModel, Field
    from qdrant_client import QdrantClient

    class SimilarCase(BaseModel):  # the backend's result model, restated: same types and bounds
        case_id: str
        condition: str
        icd_code: str
        similarity_score: float = Field(..., ge=0.0, le=1.0)
        image_url: Optional[str] = None
        description: Optional[str] = None
        key_features: List[str] = []

    folder, collection, new_photos, limit = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    client = QdrantClient(path=folder)
    stored, offset = [], None
    while True:
        records, offset = client.scroll(collection, limit=256, offset=offset, with_vectors=True)
        stored += [list(record.vector) for record in records]
        if offset is None:
            break
    report = {"queries": 0, "hits": 0, "kept": 0, "errors": [], "max_score": 0.0, "min_score": 1.0}
    for vector in stored + new_photos:
        response = client.query_points(collection_name=collection, query=vector, limit=limit, with_payload=True)
        results = []
        try:  # as the backend does: one broad except around the loop, so one bad hit loses the rest
            for hit in response.points:
                payload = hit.payload
                results.append(SimilarCase(
                    case_id=str(hit.id),
                    condition=payload.get("condition", "Unknown"),
                    icd_code=payload.get("icd_code", ""),
                    similarity_score=hit.score,
                    image_url=payload.get("image_path"),
                    description=payload.get("description"),
                    key_features=payload.get("features", []),
                ))
        except Exception as exc:
            report["errors"].append(" ".join(str(exc).split()))
        report["queries"] += 1
        report["hits"] += len(response.points)
        report["kept"] += len(results)
        scores = [hit.score for hit in response.points]
        report["max_score"] = max([report["max_score"], *scores])
        report["min_score"] = min([report["min_score"], *scores])
    report["stored"] = len(stored)
    print(json.dumps(report))
""")


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def backend(folder: Path, collection: str, new_photos: np.ndarray, limit: int = 5) -> dict:
    """The backend's loop over every stored vector and the new photos, in a fresh process."""
    answer = subprocess.run(
        [sys.executable, "-c", BACKEND, str(folder), collection, json.dumps(new_photos.tolist()), str(limit)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, clean_index) -> Path:
    """An Edge collection of the clean synthetic release as `embed` stored it with the tiny SigLIP (closed)."""
    folder = tmp_path_factory.mktemp("kiosk-source")
    store = EdgeStore(folder, "scin")
    fill_store(store, clean_index)
    store.close()
    return folder


@pytest.fixture(scope="module")
def new_photos(tiny_embedder) -> np.ndarray:
    """Photos that are not in the collection, as the backend embeds them (its vectors are not normalised)."""
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(4)]
    images.append(Image.new("RGB", (64, 64), (190, 120, 100)))
    return tiny_embedder.embed_images(images) * np.float32(7.3)


@pytest.fixture(scope="module")
def labelled_count(clean_release) -> int:
    return sum(1 for record in read_release(clean_release).records if record.payload["labelled"])


def test_every_hit_of_every_query_validates_under_the_backends_model(
    capsys, tmp_path, embedded, new_photos, labelled_count, clean_release
):
    folder = tmp_path / "qdrant_data"
    code, out, err = run(
        capsys, "export", "--qdrant-path", embedded, "--collection", "scin", "--to-qdrant-path", folder,
        "--to-collection", "scin_dermatology", "--for", "kiosk-backend", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    records = read_release(clean_release).records
    left = len(records) - labelled_count
    assert left > 0 and f"profile kiosk-backend: {labelled_count} points written, {left} left out" in out
    assert f"left out, no dermatologist label: {left}" in out
    assert f"self-similarity checked for {labelled_count} points" in out
    report = backend(folder, "scin_dermatology", new_photos)
    assert report["stored"] == labelled_count and report["queries"] == labelled_count + len(new_photos)
    assert report["errors"] == [], report
    assert report["kept"] == report["hits"] == report["queries"] * 5
    assert report["max_score"] <= 1.0 and report["min_score"] >= 0.0


def test_the_plain_export_loses_hits_in_the_backends_loop(capsys, tmp_path, embedded, new_photos):
    """What the issue reported: null conditions end the loop, so hits after them are lost."""
    folder = tmp_path / "plain"
    code, _, err = run(
        capsys, "export", "--qdrant-path", embedded, "--collection", "scin", "--to-qdrant-path", folder, "--quiet"
    )
    assert code == 0, err
    report = backend(folder, "scin", new_photos)
    assert report["errors"] and report["kept"] < report["hits"]


def test_payload_fields_under_the_profile(capsys, tmp_path, embedded, clean_release):
    folder = tmp_path / "edge"
    code, _, err = run(
        capsys, "export", "--qdrant-path", embedded, "--collection", "scin", "--to-edge-path", folder,
        "--for", "kiosk-backend", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    source, target = EdgeStore(embedded, "scin"), EdgeStore(folder, "scin")
    try:
        before = {point.id: point for point in source.scroll(with_vectors=True)}
        after = list(target.scroll(with_vectors=True))
        table = load_icd_table()
        for point in after:
            original = before[point.id].payload
            payload = point.payload
            assert set(payload) == set(original) | set(KIOSK_FIELD_NAMES)
            for name in set(original) - {"image_path"}:
                assert payload[name] == original[name], name  # every other field kept
            assert isinstance(payload["condition"], str) and payload["condition"]
            expected = table.get(payload["condition"].casefold())
            assert payload["icd_code"] == (expected.code if expected else FALLBACK_ICD)
            assert payload["features"] and all(
                isinstance(word, str) and "_" not in word for word in payload["features"]
            )
            assert payload["image_relative_path"] == original["image_path"]
            assert Path(payload["image_path"]).is_absolute() and Path(payload["image_path"]).is_file()
            assert Path(payload["image_path"]).is_relative_to(clean_release.absolute())
            cosine = float(np.dot(point.vector, before[point.id].vector))
            assert cosine > 0.99999
        # Qdrant's engine itself (Edge runs it in-process): every point queried with itself scores <= 1.0
        scores = [target.query(point.vector, limit=1)[0].score for point in after]
        assert max(scores) <= 1.0
    finally:
        source.close()
        target.close()


def test_image_urls_and_unmapped_conditions_are_reported(capsys, tmp_path, embedded, monkeypatch):
    monkeypatch.setattr(
        "scinsearch.transfer.kiosk_profile.load_icd_table",
        lambda: {key: value for key, value in load_icd_table().items() if key != "eczema"},
    )
    path = tmp_path / "kiosk.parquet"
    code, out, err = run(
        capsys, "export", "--qdrant-path", embedded, "--collection", "scin", "--to-parquet", path,
        "--for", "kiosk-backend", "--image-base-url", "https://kiosk.local/images/", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert f"not in the ICD-10 table, given {FALLBACK_ICD}: 1 conditions" in out and "Eczema (" in out
    memory = open_store(Settings(qdrant_location=":memory:", collection="scin"))
    import_parquet(path, memory, progress=False)
    points = list(memory.scroll(with_vectors=True))
    assert points and all(
        p.payload["image_path"] == "https://kiosk.local/images/" + p.payload["image_relative_path"] for p in points
    )
    assert {p.payload["icd_code"] for p in points if p.payload["condition"] == "Eczema"} == {FALLBACK_ICD}
    assert self_score_problems(np.stack([p.vector for p in points])).size == 0
    memory.close()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image-base-url", "ftp://x/"], "must be an http(s) URL"),
        (["--images-dir", "."], "--images-dir and --image-base-url belong to --for kiosk-backend"),
    ],
)
def test_profile_mistakes_are_one_line(capsys, tmp_path, embedded, extra, message):
    profile = ["--for", "kiosk-backend"] if "ftp://x/" in extra else []
    code, _, err = run(
        capsys, "export", "--qdrant-path", embedded, "--collection", "scin",
        "--to-qdrant-path", tmp_path / "q", *profile, *extra,
    )  # fmt: skip
    assert code != 0 and message in err and "Traceback" not in err


def test_placed_vectors_score_at_most_one_against_themselves_in_both_engines(tmp_path):
    """Against the real engines, not the emulation: qdrant-client's local mode and Qdrant Edge."""
    rng = np.random.default_rng(11)
    raw = rng.normal(size=(300, 48)) * rng.uniform(0.1, 9.0, size=(300, 1))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert self_score_problems(unit.astype(np.float32)).size > 0  # float32 rounding alone fails the check
    placed = place_vectors(raw)
    assert self_score_problems(placed).size == 0
    assert np.einsum("ij,ij->i", placed.astype(np.float64), unit).min() > 0.99999
    from scinsearch.schema import point_id_for
    from scinsearch.store import CollectionInfo

    points = [StoredPoint(point_id_for(str(i)), {"i": i}, vector) for i, vector in enumerate(placed)]
    memory = open_store(Settings(qdrant_location=":memory:", collection="v"))
    edge = EdgeStore(tmp_path / "edge", "v")
    for store in (memory, edge):
        store.create(CollectionInfo("m", 48))
        store.upsert(points)
        store.finish_writes()
    for point in points:
        for store in (memory, edge):
            assert store.query(point.vector, limit=1)[0].score == 1.0  # exactly: the sum of squares is exact
        stored = memory.retrieve([point.id], with_vectors=True)[0].vector
        assert memory.query(stored, limit=1)[0].score == 1.0
    memory.close()
    edge.close()


def test_the_icd_table_is_one_file_with_a_code_and_a_source_on_every_row():
    text = (Path(__file__).parents[1] / "src" / "scinsearch" / "transfer" / ICD_TABLE).read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) >= 100 and len(load_icd_table()) == len(rows)  # no name twice
    for row in rows:
        assert row["scin_condition"].strip() and row["title"].strip() and row["note"].strip(), row
        assert len(row["icd10"]) >= 3 and row["icd10"][0].isalpha() and row["icd10"][1:3].isdigit(), row


MOST_FREQUENT = """Eczema; Allergic Contact Dermatitis; Insect Bite; Urticaria; Psoriasis; Folliculitis;
Irritant Contact Dermatitis; Tinea; Herpes Zoster; Drug Rash; Herpes Simplex; Impetigo; Acute dermatitis, NOS;
Hypersensitivity; Acne; Pigmented purpuric eruption; Leukocytoclastic Vasculitis; Lichen planus/lichenoid eruption;
Pityriasis rosea; Viral Exanthem; Lichen Simplex Chronicus; Stasis Dermatitis; CD - Contact dermatitis; Scabies;
Molluscum Contagiosum; Keratosis pilaris; Granuloma annulare; Tinea Versicolor; Rosacea; O/E - ecchymoses present"""


def test_the_most_frequent_scin_labels_have_a_code():
    """SCIN's demo notebook's most frequent labels (research/scin.md) are all in the table."""
    names = [name.strip() for name in MOST_FREQUENT.replace("\n", " ").split(";")]
    assert len(names) == 30
    table = load_icd_table()
    assert [name for name in names if condition_key(name) not in table] == []


def test_the_storage_docs_map_every_field_the_profile_writes():
    text = (Path(__file__).parents[1] / "docs" / "storage.md").read_text(encoding="utf-8")
    section = text.split("### The kiosk-backend profile", 1)[1].split("\n## ", 1)[0]
    for name in KIOSK_FIELD_NAMES:
        assert f"`{name}`" in section, name


def test_the_server_path_writes_the_profile_too(capsys, embedded, labelled_count):
    """--to-url through qdrant-client's in-process mode: the client calls a server URL makes (no server here)."""
    code, out, err = run(
        capsys, "export", "--qdrant-path", embedded, "--collection", "scin", "--to-url", ":memory:",
        "--for", "kiosk-backend", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert f"copied {labelled_count}," in out and f"self-similarity checked for {labelled_count} points" in out


def test_a_second_run_finds_every_point_present_and_identical(capsys, tmp_path, embedded, labelled_count):
    """How an interrupted export resumes: each point's vector is its own, whatever else was in its page."""
    command = ["export", "--qdrant-path", embedded, "--collection", "scin", "--to-edge-path", tmp_path / "edge"]
    assert run(capsys, *command, "--for", "kiosk-backend", "--quiet")[0] == 0
    code, out, err = run(capsys, *command, "--for", "kiosk-backend", "--quiet")
    assert code == 0, err
    assert f"copied 0, already present {labelled_count}" in out and "sampled points identical" in out


def test_features_are_plain_words_without_the_none_boxes():
    from scinsearch.transfer.kiosk_profile import features_of

    payload = {
        "textures": ["raised_or_bumpy"],
        "condition_symptoms": ["itching", "no_relevant_experience"],
        "other_symptoms": ["fever", "no_relevant_symptoms"],
        "body_parts": ["arm", "foot_sole"],
    }
    assert features_of(payload) == ["raised or bumpy", "itching", "fever", "arm", "foot sole"]
    assert features_of({"textures": None}) == []
