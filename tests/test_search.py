"""Searcher: queries by photo, stored image and text; filters on both backends; per-case grouping;
abstaining suggestions; zero-shot kept apart; the qdrant-client snippet of docs/storage.md."""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fill_store
from scinsearch import dataset, pipeline
from scinsearch.errors import ScinSearchError
from scinsearch.results import DISCLAIMER, SCHEMA
from scinsearch.search import Searcher, one_per_case
from scinsearch.search_filters import SearchFilters, SearchOptions
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, Filter, open_store

STORAGE_DOC = Path(__file__).resolve().parents[1] / "docs" / "storage.md"  # holds the qdrant-client snippet


@pytest.fixture(scope="module")
def searcher(clean_index, tiny_embedder):
    settings = Settings(qdrant_location=":memory:", collection="search")
    store = open_store(settings)
    fill_store(store, clean_index)
    with Searcher(settings, embedder=tiny_embedder, store=store) as opened:
        yield opened
    store.close()


@pytest.fixture(scope="module")
def trap_searcher(tiny_embedder, scin_release):
    """The release with its traps: one image shared by two cases."""
    settings = Settings(qdrant_location=":memory:", collection="traps")
    store = open_store(settings)
    pipeline.run_embed(
        dataset.read_release(scin_release), tiny_embedder, store, workers=0, progress=False, warn=lambda message: None
    )
    with Searcher(settings, embedder=tiny_embedder, store=store) as opened:
        yield opened
    store.close()


@pytest.fixture
def backend_searcher(store_settings, store, clean_index, tiny_embedder):
    """A searcher on each backend (Qdrant Edge and qdrant-client ':memory:')."""
    fill_store(store, clean_index)
    return Searcher(store_settings, embedder=tiny_embedder, store=store)


def points_of(clean_index):
    return clean_index[1]


# Text -----------------------------------------------------------------------------------------------


def test_text_is_tokenised_as_siglip_was_trained(tiny_embedder):
    """Padded to the model's 64 positions, no attention mask: the pooler reads the last position."""
    texts = ["itchy red ring on the arm", "a photo of eczema"]
    ids = tiny_embedder.tokenize(texts)
    assert ids.shape == (2, 64)
    assert "attention_mask" not in tiny_embedder.processor.tokenizer(texts, padding="max_length")
    padded = tiny_embedder.processor.tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")[
        "input_ids"
    ]
    with torch.inference_mode():
        expected = tiny_embedder.model.get_text_features(input_ids=padded)
        expected = getattr(expected, "pooler_output", expected)
        unpadded = tiny_embedder.model.get_text_features(
            input_ids=tiny_embedder.processor.tokenizer(texts, padding="longest", return_tensors="pt")["input_ids"]
        )
        unpadded = getattr(unpadded, "pooler_output", unpadded)
    expected = torch.nn.functional.normalize(expected.float(), dim=-1).numpy()
    unpadded = torch.nn.functional.normalize(unpadded.float(), dim=-1).numpy()
    vectors = tiny_embedder.embed_texts(texts)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert not np.allclose(vectors, unpadded, atol=1e-3), "padding must change the vector, or the test proves nothing"


def test_text_search_uses_the_text_tower_vector(searcher, clean_index):
    result = searcher.search_text("itchy red ring on the arm", options=SearchOptions(top_k=3))
    query = searcher.embedder.embed_texts(["itchy red ring on the arm"])[0]
    stored = {p.payload["image_id"]: p.vector for p in points_of(clean_index)}
    for neighbour in result.results:
        assert neighbour.score == pytest.approx(float(query @ stored[neighbour.image_id]), abs=1e-4)
    assert result.query["kind"] == "text" and result.query["text"] == "itchy red ring on the arm"
    assert result.suggestions.thresholds["min_similarity"] < 0.3, "text-image cosines get the text threshold"


# Images ---------------------------------------------------------------------------------------------


def test_a_stored_photo_finds_itself_as_path_bytes_or_pil(searcher, clean_release, clean_index):
    point = points_of(clean_index)[0]
    path = clean_release / point.payload["image_path"]
    for query in (path, str(path), path.read_bytes(), Image.open(path)):
        result = searcher.search_image(query, options=SearchOptions(top_k=3))
        assert result.results[0].image_id == point.payload["image_id"]
        assert result.results[0].score == pytest.approx(1.0, abs=1e-4)
        assert result.query["kind"] == "image" and "image" not in result.query


def test_exif_orientation_is_applied_to_query_photos(searcher):
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 24, 3), dtype=np.uint8))
    stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = stored_sideways.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    stored_sideways.save(buffer, format="PNG", exif=exif)
    from_exif = searcher.embed_query_image(buffer.getvalue())
    np.testing.assert_allclose(from_exif, searcher.embed_query_image(upright), atol=1e-5)


class NoEmbedding:
    """An embedder that refuses to embed: proves stored-image queries reuse the stored vector."""

    def __init__(self, real):
        self.model_name, self.dim = real.model_name, real.dim

    def embed_images(self, images):
        raise AssertionError("a stored image was re-embedded")

    embed_texts = embed_images


def test_like_reuses_the_stored_vector_and_excludes_its_own_case(searcher, clean_index):
    source = next(
        p
        for p in points_of(clean_index)
        if len(p.payload["case_ids"]) == 1
        and sum(q.payload["case_id"] == p.payload["case_id"] for q in points_of(clean_index)) >= 2
    )
    no_embedding = Searcher(searcher.settings, embedder=NoEmbedding(searcher.embedder), store=searcher.store)
    result = no_embedding.search_like(source.payload["image_id"], options=SearchOptions(top_k=10))
    assert all(source.payload["case_id"] not in n.case_ids for n in result.results)
    assert result.query["kind"] == "like" and result.query["exclude_same_case"] is True
    included = no_embedding.search_like(
        source.payload["image_id"], options=SearchOptions(top_k=10), exclude_same_case=False
    )
    assert any(source.payload["case_id"] in n.case_ids for n in included.results), "other photos of the case"
    assert all(n.image_id != source.payload["image_id"] for n in included.results), "never the image itself"


def test_one_result_per_case_by_default(searcher, clean_index):
    vector = points_of(clean_index)[0].vector
    per_image = searcher.search_vector(vector, {"kind": "vector"}, None, SearchOptions(30, per_case=False)).results
    per_case = searcher.search_vector(vector, {"kind": "vector"}, None, SearchOptions(30, per_case=True)).results
    assert len(per_image) == 30 and len({n.case_id for n in per_image}) < 30, "cases have several photos"
    cases = [c for n in per_case for c in n.case_ids]
    assert len(cases) == len(set(cases))
    assert len(per_case) == len({p.payload["case_id"] for p in points_of(clean_index)}) or len(per_case) == 30
    assert [n.score for n in per_case] == sorted((n.score for n in per_case), reverse=True)


def test_a_shared_image_stands_for_all_its_cases(trap_searcher):
    shared = next(p for p in trap_searcher.store.scroll(with_vectors=True) if len(p.payload["case_ids"]) == 2)
    cases = set(shared.payload["case_ids"])
    grouped = trap_searcher.nearest(shared.vector, Filter(), SearchOptions(top_k=10))
    assert grouped[0].image_id == shared.payload["image_id"]
    assert all(not cases & set(n.case_ids) for n in grouped[1:])
    liked = trap_searcher.search_like(shared.payload["image_id"], options=SearchOptions(top_k=10))
    assert all(not cases & set(n.case_ids) for n in liked.results)
    for case_id in cases:
        assert shared.payload["image_id"] in [p["image_id"] for p in trap_searcher.get_case(case_id)]


def test_one_per_case_keeps_the_best_image_of_each_case(trap_searcher):
    hits = trap_searcher.nearest(
        next(trap_searcher.store.scroll(with_vectors=True)).vector, Filter(), SearchOptions(50, per_case=False)
    )
    assert one_per_case(hits) == one_per_case(one_per_case(hits))
    assert [n.score for n in one_per_case(hits)] == sorted((n.score for n in one_per_case(hits)), reverse=True)


# Filters on both backends -----------------------------------------------------------------------------

FILTER_CASES = [
    (dict(fitzpatrick="FST5,6"), lambda p: p["fitzpatrick_skin_type"] in ("FST5", "FST6")),
    (dict(dermatologist_fitzpatrick=["fst2"]), lambda p: p["dermatologist_fitzpatrick_skin_type"] == "FST2"),
    (
        dict(monk_min=3, monk_max=6),
        lambda p: p["monk_skin_tone_label_us"] is not None and 3 <= p["monk_skin_tone_label_us"] <= 6,
    ),
    (dict(age_groups="30-39"), lambda p: p["age_group"] == "AGE_30_TO_39"),
    (dict(sexes=("female",)), lambda p: p["sex_at_birth"] == "FEMALE"),
    (dict(body_parts="Head or neck"), lambda p: "head_or_neck" in p["body_parts"]),
    (dict(conditions=("Acute dermatitis, NOS",)), lambda p: "Acute dermatitis, NOS" in p["conditions"]),
    (dict(splits="train"), lambda p: p["split"] == "train"),
    (dict(gradable_only=True), lambda p: p["gradable"] is True),
    (
        dict(fitzpatrick="FST1,FST2,FST3,FST4", sexes="MALE", gradable_only=True),
        lambda p: (
            p["fitzpatrick_skin_type"] in ("FST1", "FST2", "FST3", "FST4")
            and p["sex_at_birth"] == "MALE"
            and p["gradable"]
        ),
    ),
]


def test_filters_on_both_backends(backend_searcher, clean_index):
    vector = points_of(clean_index)[0].vector
    for arguments, holds in FILTER_CASES:
        filters = SearchFilters(**arguments)
        results = backend_searcher.search_vector(vector, {}, filters, SearchOptions(200, per_case=False)).results
        expected = [p for p in points_of(clean_index) if holds(p.payload)]
        assert expected, f"the synthetic data must exercise {arguments}"
        assert sorted(n.image_id for n in results) == sorted(p.payload["image_id"] for p in expected), arguments


def test_min_score_on_both_backends(backend_searcher, clean_index):
    vector = points_of(clean_index)[0].vector
    results = backend_searcher.search_vector(vector, {}, None, SearchOptions(200, 0.9, per_case=False)).results
    scores = sorted(float(vector @ p.vector) for p in points_of(clean_index))
    assert results and all(n.score >= 0.9 - 1e-6 for n in results)
    assert len(results) == sum(s >= 0.9 - 1e-5 for s in scores)


def test_unknown_condition_is_reported_with_a_hint(backend_searcher):
    with pytest.raises(ScinSearchError, match=r"no stored case has the condition 'eczemaa'.*'Eczema'"):
        backend_searcher.search_text("red patch", SearchFilters(conditions=("eczemaa",)))
    with pytest.raises(ScinSearchError, match="body part 'elbow'"):
        backend_searcher.search_text("red patch", SearchFilters(body_parts="elbow"))


def test_enumerated_filter_values_are_validated():
    with pytest.raises(ScinSearchError, match="unknown Fitzpatrick skin type 'FST7'.*FST1, FST2"):
        SearchFilters(fitzpatrick="FST7")
    with pytest.raises(ScinSearchError, match="unknown age group"):
        SearchFilters(age_groups="teen")
    with pytest.raises(ScinSearchError, match="unknown sex at birth"):
        SearchFilters(sexes="X")
    with pytest.raises(ScinSearchError, match="unknown split"):
        SearchFilters(splits="dev")
    with pytest.raises(ScinSearchError, match="Monk skin tone"):
        SearchFilters(monk_min=11)
    with pytest.raises(ScinSearchError, match="above"):
        SearchFilters(monk_min=7, monk_max=3)
    with pytest.raises(ScinSearchError, match="empty condition"):
        SearchFilters(conditions=("  ",))
    assert SearchFilters(fitzpatrick="V, fst6, 6").fitzpatrick == ("FST5", "FST6")
    assert not SearchFilters() and SearchFilters(gradable_only=True)
    assert SearchFilters(conditions="Acute dermatitis, NOS").conditions == ("Acute dermatitis, NOS",)


# Bad input -----------------------------------------------------------------------------------------


def test_bad_queries_raise_one_line_errors(searcher, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a picture")
    cases = [
        (lambda: searcher.search_image(b"\x89PNG\r\n\x1a\n broken"), "cannot use the query image"),
        (lambda: searcher.search_image(broken), "not an image file"),
        (lambda: searcher.search_image(tmp_path / "missing.jpg"), "file not found"),
        (lambda: searcher.search_like("123456"), "unknown image id '123456'"),
        (lambda: searcher.search_like(""), "empty image id"),
        (lambda: searcher.search_text("   "), "empty text"),
        (lambda: searcher.search_text("\u200b\x00\u2060"), "empty text"),
        (lambda: searcher.search_text("rash", options=SearchOptions(top_k=0)), "top_k must be from 1 to 200, not 0"),
        (lambda: searcher.search_text("rash", options=SearchOptions(min_score=2.0)), "min_score must be a cosine"),
    ]
    for call, message in cases:
        with pytest.raises(ScinSearchError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert str(broken) not in str(pytest.raises(ScinSearchError, searcher.search_image, broken).value)


def test_a_collection_of_another_model_is_refused(tiny_embedder):
    settings = Settings(qdrant_location=":memory:", collection="other")
    store = open_store(settings)
    store.create(CollectionInfo("google/siglip-so400m-patch14-384", 1152))
    with pytest.raises(ScinSearchError, match="siglip-so400m-patch14-384"):
        Searcher(settings, embedder=tiny_embedder, store=store)
    with pytest.raises(ScinSearchError, match="does not exist"):
        Searcher(settings.replace(collection="never-made"), embedder=tiny_embedder)


# Output -----------------------------------------------------------------------------------------------


def test_result_json_schema(searcher, clean_index):
    image_id = points_of(clean_index)[3].payload["image_id"]
    output = json.loads(json.dumps(searcher.search_like(image_id, SearchFilters(splits="train,val")).to_dict()))
    assert output["schema"] == SCHEMA and output["disclaimer"] == DISCLAIMER
    assert output["query"]["filters"] == {"splits": ["train", "val"]} and output["query"]["top_k"] == 5
    assert "zero_shot" not in output
    first = output["results"][0]
    for key in (
        "score",
        "image_id",
        "case_id",
        "case_ids",
        "image_path",
        "condition",
        "weighted_labels",
        "fitzpatrick_skin_type",
        "dermatologist_fitzpatrick_skin_type",
        "monk_skin_tone_label_us",
        "age_group",
        "sex_at_birth",
        "body_parts",
        "gradable",
        "split",
        "description",
    ):
        assert key in first
    suggestions = output["suggestions"]
    assert set(suggestions) >= {"confident", "reason", "conditions", "neighbours", "thresholds"}
    assert suggestions["neighbours"] == len(output["results"])


def test_zero_shot_is_labelled_and_uses_sigmoid_of_siglip_logits(searcher, clean_index):
    point = points_of(clean_index)[0]
    result = searcher.search_like(point.payload["image_id"], zero_shot=True)
    assert result.zero_shot is not None and result.zero_shot.prompt == "a photo of {condition}"
    name, probability = result.zero_shot.scores[0]
    text = searcher.embedder.embed_texts([f"a photo of {name}"])
    with torch.no_grad():
        logit = searcher.embedder.zero_shot_logits(point.vector[None, :], text)[0, 0]
    assert probability == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-5)
    assert name in searcher.known_conditions()
    output = result.to_dict()["zero_shot"]
    assert "zero-shot" in output["method"] and "sigmoid" in output["method"]
    assert [s["probability"] for s in output["scores"]] == sorted(
        (s["probability"] for s in output["scores"]), reverse=True
    )


def test_get_image_and_get_case(searcher, clean_index):
    point = points_of(clean_index)[5]
    assert searcher.get_image(point.payload["image_id"])["case_id"] == point.payload["case_id"]
    assert searcher.get_image("no-such-image") is None
    case = searcher.get_case(point.payload["case_id"])
    assert point.payload["image_id"] in [p["image_id"] for p in case]
    assert searcher.get_case("no-such-case") == []


# Preprocessing recorded with the collection ---------------------------------------------------------


def test_queries_are_preprocessed_as_the_collection_was_embedded(
    capsys, tmp_path, tiny_siglip_dir, tiny_embedder, embed_args
):
    """`embed --exact-preprocessing` records it; a Searcher opened with default settings follows the record,
    so a stored image's photo finds its own stored vector, which the default fast path would not."""
    from scinsearch import testing
    from scinsearch.cli import main

    release = testing.write_release(tmp_path / "scin", cases=3, image_size=(200, 260), broken_files=False)
    embed = embed_args(release, tmp_path / "q", "--precision", "fp32", "--compile", "off")
    assert main(embed + ["--exact-preprocessing"]) == 0
    settings = Settings(model=str(tiny_siglip_dir), qdrant_path=tmp_path / "q", device="cpu", precision="fp32")
    with Searcher.open(settings) as searcher:
        assert searcher.info.preprocessing == "exact"
        stored = next(searcher.store.scroll(with_vectors=True))
        photo = release / stored.payload["image_path"]
        np.testing.assert_allclose(searcher.embed_query_image(photo), stored.vector, atol=1e-5)
    fast = tiny_embedder.embed_images([photo])[0]
    assert not np.allclose(fast, stored.vector, atol=1e-5), "the fast path must differ, or the test proves nothing"
    capsys.readouterr()
    assert main(embed) == 1  # resuming it with the other preprocessing would mix the two
    assert "embedded with exact preprocessing" in capsys.readouterr().err
    assert main(["info", "--qdrant-path", str(tmp_path / "q")]) == 0
    assert "preprocessing: exact" in capsys.readouterr().out


# The qdrant-client snippet of docs/storage.md ------------------------------------------------------------


def same_function(page: Path, function) -> bool:
    """The page's Python block defines `function` exactly as here (compared as syntax trees, so a reformat of
    either copy does not matter, a changed line does)."""
    wanted = ast.dump(ast.parse(inspect.getsource(function)).body[0])
    for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M):
        for node in ast.parse(block).body:
            if isinstance(node, ast.FunctionDef) and node.name == function.__name__:
                return ast.dump(node) == wanted
    return False


from qdrant_client import QdrantClient  # noqa: E402  (the snippet's imports)

from scinsearch.embedding import Embedder  # noqa: E402


def print_similar_cases(
    client: QdrantClient, embedder: Embedder, photo: Path, collection: str = "scin_dermatology", limit: int = 5
) -> None:
    query = embedder.embed_images([photo])[0]  # same preprocessing as indexing, EXIF included
    response = client.query_points(collection_name=collection, query=query.tolist(), limit=limit, with_payload=True)
    for point in response.points:
        print(f"{point.payload['condition']}  score={point.score:.3f}  {point.payload['image_path']}")


def test_docs_query_snippet_runs_against_a_collection_made_by_scinsearch(
    clean_index, tiny_embedder, clean_release, capsys
):
    assert same_function(STORAGE_DOC, print_similar_cases), "docs/storage.md's snippet and this test must be the same"
    store = open_store(Settings(qdrant_location=":memory:", collection="scin_dermatology"))
    fill_store(store, clean_index)
    point = points_of(clean_index)[2]
    print_similar_cases(store.client, tiny_embedder, clean_release / point.payload["image_path"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    assert re.fullmatch(
        rf"{re.escape(str(point.payload['condition']))}  score=1\.000  "
        rf"{re.escape(point.payload['image_path'])}",
        lines[0],
    )
    store.close()
