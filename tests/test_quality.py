"""Photo and answer quality: made images each produce their own warning (and a normal photo none), through
the checks, the Searcher on a calibrated collection, the CLI table and the HTTP JSON."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile, ImageFilter

from conftest import fill_store
from scinsearch import quality, testing
from scinsearch.calibration.calibrate import calibrate_collection
from scinsearch.cli import main
from scinsearch.images import decode_photo
from scinsearch.search import Searcher
from scinsearch.service import ServiceSettings, create_app
from scinsearch.settings import Settings
from scinsearch.store import open_store


def skin_photo(size=(640, 480), seed=0) -> Image.Image:
    """A well-lit, sharp, skin-coloured photo with fine texture and a few darker spots."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    spots = ((np.sin(xx / 9) * np.cos(yy / 7)) > 0.8)[..., None] * -40.0
    pixels = np.array([190, 140, 120], np.float32) + rng.normal(0, 6, (height, width, 1)) + spots
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def scaled(image: Image.Image, factors) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, np.float32) * np.array(factors), 0, 255).astype(np.uint8))


def dark(image: Image.Image) -> Image.Image:
    return scaled(image, 0.1)


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(4))


def tiny(image: Image.Image) -> Image.Image:
    return image.resize((120, 90))


def tinted(image: Image.Image) -> Image.Image:
    return scaled(image, (0.45, 1.3, 0.6))  # under a green lamp


def overexposed(image: Image.Image) -> Image.Image:
    return scaled(image, 2.5)


def warning_codes(checks) -> set[str]:
    return {check.code for check in checks if check.verdict == quality.WARN}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# The photo checks on made images -------------------------------------------------------------------------


def test_a_normal_photo_passes_every_photo_check():
    checks = quality.photo_checks(skin_photo())
    assert [c.name for c in checks] == ["brightness", "overexposure", "sharpness", "size", "tint"]
    assert all(c.verdict == quality.PASS for c in checks), [c.reason for c in checks]


@pytest.mark.parametrize(
    "spoil, code, name",
    [
        (dark, "too_dark", "brightness"),
        (blurred, "blurred", "sharpness"),
        (tiny, "too_small", "size"),
        (tinted, "tinted", "tint"),
        (overexposed, "overexposed", "overexposure"),
    ],
)
def test_each_spoilt_photo_gets_its_own_warning_and_only_it(spoil, code, name):
    checks = quality.photo_checks(spoil(skin_photo()))
    assert warning_codes(checks) == {code}
    check = next(c for c in checks if c.name == name)
    assert check.value is not None and check.threshold is not None and check.reason and check.advice
    assert check.advice == quality.ADVICE[code]


def test_thresholds_sit_between_the_normal_and_the_spoilt_values():
    """Each measured value is on the right side of its named threshold, with room to spare."""
    normal = {c.name: c.value for c in quality.photo_checks(skin_photo())}
    assert normal["brightness"] > 2 * quality.MIN_BRIGHTNESS
    assert quality.photo_checks(dark(skin_photo()))[0].value < quality.MIN_BRIGHTNESS / 2
    assert normal["sharpness"] > 3 * quality.MIN_SHARPNESS
    assert quality.photo_checks(blurred(skin_photo()))[2].value < quality.MIN_SHARPNESS / 3


def test_a_well_lit_photo_of_dark_skin_is_not_too_dark():
    """Brightness is judged on the highlights, not the mean: dark skin filling the frame is not a dark photo."""
    darkest_skin = scaled(skin_photo(), (70 / 190, 45 / 140, 35 / 120))
    highlights = np.asarray(darkest_skin).copy()
    highlights[::25, ::25] = (150, 120, 110)  # skin's specular highlights
    checks = quality.photo_checks(Image.fromarray(highlights))
    assert "too_dark" not in warning_codes(checks)
    assert np.asarray(darkest_skin, np.float32).mean() / 255 < quality.MIN_BRIGHTNESS * 1.5


def test_checks_run_on_a_bounded_copy_and_size_is_judged_as_taken():
    big = skin_photo((2000, 1500))
    assert max(quality.analysis_copy(big).shape[:2]) == quality.ANALYSIS_SIDE
    assert quality.size_check((200, 3000)).code == "too_small"
    assert quality.photo_checks(tiny(skin_photo()), taken_size=(4000, 3000))[3].verdict == quality.PASS


def test_the_size_check_reads_the_upright_size_from_the_header():
    photo = skin_photo((300, 200))
    exif = photo.getexif()
    exif[0x0112] = 6  # rotate a quarter when shown
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    assert decode_photo(buffer.getvalue()).taken_size == (200, 300)


def test_a_png_photo_is_decoded_once_and_only_through_the_allowed_plugins(monkeypatch):
    """Issue 23: the size check used to re-open the photo without the format allow-list and ask for
    its EXIF, which decodes a PNG's pixels a second time."""
    buffer = io.BytesIO()
    skin_photo((300, 200)).save(buffer, format="PNG")
    opened, decoded = [], []
    real_open, real_load = Image.open, ImageFile.ImageFile.load

    def spy_open(fp, mode="r", formats=None):
        opened.append(formats)
        return real_open(fp, mode, formats)

    def spy_load(image):
        if image.tile:
            decoded.append(image.format)
        return real_load(image)

    monkeypatch.setattr(Image, "open", spy_open)
    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    photo = decode_photo(buffer.getvalue())
    quality.photo_checks(photo.image, photo.taken_size)
    assert decoded == ["PNG"] and len(opened) == 1 and opened[0] is not None


def test_calibration_checks_are_skipped_without_a_calibration():
    assert quality.gradability_check(None).verdict == quality.SKIPPED
    assert quality.similarity_check(0.9, None).verdict == quality.SKIPPED
    assert quality.gradability_check(0.2).code == "not_gradable"
    assert quality.gradability_check(0.8).verdict == quality.PASS
    assert quality.similarity_check(0.4, 0.6).code == "nothing_alike"
    assert quality.similarity_check(None, 0.6).verdict == quality.SKIPPED
    report = quality.QualityReport([quality.similarity_check(0.4, 0.6)])
    assert report.to_dict()["ok"] is False and report.to_dict()["checks"][0]["threshold"] == 0.6


# Through a Searcher on a calibrated collection -------------------------------------------------------------


def look_alike() -> Image.Image:
    """A new photo from the same generator as the synthetic release's 'Insect Bite' cases: like the collection,
    and clean for every photo check."""
    return testing.condition_image("Insect Bite", (640, 480), random.Random(99))


@pytest.fixture(scope="module")
def calibrated_settings(tmp_path_factory, clean_index, tiny_embedder) -> Settings:
    """The clean synthetic release in an embedded store, calibrated."""
    settings = Settings(
        qdrant_path=tmp_path_factory.mktemp("quality-store"), collection="quality", model=tiny_embedder.model_name
    )
    store = open_store(settings)
    fill_store(store, clean_index)
    store.close()
    calibrate_collection(settings, target_precision=0.5, bootstrap=50)
    return settings


@pytest.fixture
def calibrated(calibrated_settings, tiny_embedder):
    """(settings, a Searcher over the calibrated collection); the embedded store is released afterwards."""
    with Searcher(calibrated_settings, embedder=tiny_embedder) as searcher:
        yield calibrated_settings, searcher


def test_the_calibration_is_read_from_the_collection(calibrated):
    _, searcher = calibrated
    assert searcher.calibration is not None and searcher.calibration.probe is not None
    result = searcher.search_image(look_alike())
    assert result.suggestions.thresholds_source == "calibrated"
    assert result.suggestions.thresholds["min_similarity"] == searcher.calibration.thresholds["min_similarity"]
    assert result.suggestions.to_dict()["thresholds_source"] == "calibrated"


def test_a_normal_photo_like_the_collection_gets_no_warning(calibrated):
    _, searcher = calibrated
    result = searcher.search_image(png(look_alike()))
    report = result.quality.to_dict()
    assert report["ok"] is True, [c["reason"] for c in report["checks"] if c["verdict"] != "pass"]
    assert [c["name"] for c in report["checks"]] == list(quality.CHECK_NAMES)
    assert all(c["verdict"] == "pass" for c in report["checks"])
    assert 0 <= report["checks"][5]["value"] <= 1, "the gradability probability"


@pytest.mark.parametrize("spoil, code", [(dark, "too_dark"), (blurred, "blurred"), (tiny, "too_small")])
def test_a_spoilt_photo_is_answered_with_its_warning_and_still_has_results(calibrated, spoil, code):
    _, searcher = calibrated
    result = searcher.search_image(png(spoil(look_alike())))
    assert code in warning_codes(result.quality.checks)
    assert result.results, "a warning hides nothing"


def test_a_photo_unlike_the_collection_says_no_similar_case_exists(calibrated):
    _, searcher = calibrated
    result = searcher.search_image(png(skin_photo()))  # a clean photo, but nothing in the synthetic release is skin
    similarity = result.quality.get("similarity")
    assert similarity.code == "nothing_alike" and similarity.value < similarity.threshold
    assert similarity.threshold == pytest.approx(searcher.calibration.cut)
    assert warning_codes(result.quality.checks) == {"nothing_alike"}, "the photo itself is fine"
    assert not result.suggestions.confident and "no sufficiently similar case" in result.suggestions.reason
    assert result.suggestions.to_dict()["conditions"] == []
    assert result.results, "the closest cases stay viewable"


def test_stored_image_queries_check_similarity_only_and_text_queries_none(calibrated):
    _, searcher = calibrated
    point = next(searcher.store.scroll())
    like = searcher.search_like(point.payload["image_id"])
    assert [c.name for c in like.quality.checks] == ["similarity"]
    text = searcher.search_text("itchy red ring on the arm")
    assert text.quality is None and "quality" not in text.to_dict()
    assert text.suggestions.thresholds_source == "default"


def test_the_cli_table_says_the_warnings_in_words(calibrated_settings, tmp_path, capsys):
    settings = calibrated_settings
    photo = tmp_path / "dark.png"
    photo.write_bytes(png(dark(look_alike())))
    args = ["search", "--image", str(photo), "--qdrant-path", str(settings.qdrant_path)]
    args += ["--collection", settings.collection, "--model", settings.model, "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Warning: The photo is too dark" in out and "What to do: Take it again in daylight" in out
    assert "can still be looked at" in out
    assert main(args + ["--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert "too_dark" in {c["code"] for c in body["quality"]["checks"]}


def test_the_service_returns_quality_in_the_json(calibrated):
    _, searcher = calibrated
    app = create_app(ServiceSettings(warm_up=False), searcher=searcher)
    with TestClient(app, base_url="http://localhost") as client:  # a host name the service accepts
        assert client.get("/ready").json()["calibrated"] is True
        normal = client.post("/search", files={"photo": ("p.png", png(look_alike()), "image/png")}).json()
        assert normal["quality"]["ok"] is True
        spoilt = client.post("/search", files={"photo": ("p.png", png(dark(look_alike())), "image/png")}).json()
        warned = {c["code"]: c for c in spoilt["quality"]["checks"] if c["verdict"] == "warn"}
        assert "too_dark" in warned and spoilt["quality"]["ok"] is False and spoilt["results"]
        assert set(warned["too_dark"]) == {"name", "value", "threshold", "verdict", "code", "reason", "advice"}
        text = client.post("/search/text", json={"text": "itchy red ring"}).json()
        assert "quality" not in text


def test_decoding_once_for_the_checks_embeds_exactly_what_the_embedder_would(tiny_embedder):
    """The photo is decoded once (for the checks and the model); the vector must not change because of it."""
    buffer = io.BytesIO()
    skin_photo((1200, 900)).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    preprocessor = tiny_embedder.preprocessor
    assert preprocessor.fast, "the fast path decodes JPEGs at a reduced scale: the case worth checking"
    decoded = preprocessor.decode(jpeg)
    np.testing.assert_array_equal(preprocessor(decoded.image)["pixels"], preprocessor.load(jpeg)["pixels"])
    assert decoded.image.size != (1200, 900) and decoded.taken_size == (1200, 900)
