"""The kiosk page's message catalogues and /config, without a browser: every language has every
message (with the same placeholders), every error code and quality code has plain words, adding a
language is one file, and the idle reset flows from `serve`'s option to the page."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from scinsearch import errors
from scinsearch.results import DISCLAIMER
from scinsearch.search_filters import PAGE_MENUS
from scinsearch.service import ServiceSettings, create_app
from scinsearch.service.app import STATIC_DIR
from scinsearch.service.page_config import catalogue_languages

I18N = STATIC_DIR / "i18n"
EN = json.loads((I18N / "en.json").read_text(encoding="utf-8"))
OTHERS = sorted(path.stem for path in I18N.glob("*.json") if path.stem != "en")
QUALITY_CODES = ["too_dark", "overexposed", "blurred", "too_small", "tinted", "not_gradable", "nothing_alike"]


def load(code: str) -> dict:
    return json.loads((I18N / f"{code}.json").read_text(encoding="utf-8"))


def placeholders(value) -> set[str]:
    texts = value.values() if isinstance(value, dict) else [value]
    return {name for text in texts for name in re.findall(r"\{(\w+)\}", text)}


def test_there_is_a_language_besides_english_marked_as_a_draft():
    assert OTHERS, "at least one language besides English"
    for code in OTHERS:
        assert load(code)["_status"] == "draft: to be reviewed by a native speaker with clinical vocabulary"


def test_the_kiosk_backends_languages_are_named_in_their_own_script():
    """The language switch shows each language as its speakers write it (issue 21)."""
    names = {item["code"]: item["name"] for item in catalogue_languages(I18N)}
    assert {code: names.get(code) for code in ("hi", "ta", "te", "bn")} == {
        "hi": "हिन्दी",
        "ta": "தமிழ்",
        "te": "తెలుగు",
        "bn": "বাংলা",
    }


@pytest.mark.parametrize("code", OTHERS)
def test_every_language_has_every_message_with_the_same_placeholders(code):
    catalogue = load(code)
    assert set(catalogue) == set(EN)
    for key, english in EN.items():
        if key.startswith("_"):
            continue
        assert type(catalogue[key]) is type(english), key
        assert catalogue[key], key
        assert placeholders(catalogue[key]) == placeholders(english), key
        if isinstance(english, dict):
            assert "other" in catalogue[key], key


def test_english_speaks_for_every_code_and_value():
    assert EN["disclaimer_full"] == DISCLAIMER  # the page's full text is the service's, word for word
    codes = [value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)]
    assert "not_an_image" in codes and "internal" in codes
    for code in [*codes, "offline"]:
        assert EN.get(f"error_{code}"), f"no plain words for the error code {code!r}"
    for code in QUALITY_CODES:
        assert EN.get(f"quality_{code}") and EN.get(f"quality_{code}_advice"), code
    assert EN["quality_nothing_alike"] == "No sufficiently similar case was found."
    assert PAGE_MENUS, "the page offers no filter"
    for spec in PAGE_MENUS:  # the page's menus come from the filter registry (GET /filters)
        assert EN.get(f"filter_{spec.name}"), f"no title for the {spec.name} menu"
        for value in spec.vocabulary:
            assert EN.get(f"{spec.menu}_{value}"), f"no words for the {spec.name} value {value!r}"


def test_config_lists_the_languages_and_the_idle_reset():
    app = create_app(ServiceSettings(warm_up=False, idle_reset_seconds=42), searcher=object())
    with TestClient(app, base_url="http://localhost") as client:  # a host name the service answers
        config = client.get("/config").json()
    assert config["idle_reset_seconds"] == 42 and config["default_language"] == "en"
    codes = [language["code"] for language in config["languages"]]
    assert codes[0] == "en" and set(codes) == {"en", *OTHERS}
    assert all(language["name"] for language in config["languages"])


def test_adding_a_language_is_one_file_and_a_broken_one_is_left_out(tmp_path):
    (tmp_path / "en.json").write_text(json.dumps({"_language": "English", "title": "Find"}))
    (tmp_path / "pt-BR.json").write_text(json.dumps({"_language": "Português", "_status": "draft", "title": "Ache"}))
    (tmp_path / "xx.json").write_text("{not json")
    (tmp_path / "noname.json").write_text(json.dumps({"title": "no _language name"}))
    (tmp_path / "Not A Tag.json").write_text(json.dumps({"_language": "?"}))
    languages = catalogue_languages(tmp_path)
    assert [item["code"] for item in languages] == ["en", "pt-BR"]
    assert languages[1] == {"code": "pt-BR", "name": "Português", "status": "draft"}


def test_serve_takes_the_idle_reset_from_its_option_or_the_environment(monkeypatch):
    import uvicorn

    from scinsearch.cli import cli
    from scinsearch.commands import service_cmds

    seen = []

    class Closable:
        embedder = type("E", (), {"describe": lambda self: "fake"})()
        adapter = None  # serve describes an adapter when the searcher has one

        def close(self):
            pass

    monkeypatch.setattr(service_cmds, "open_searcher", lambda settings, model_given=True: (Closable(), Closable()))
    monkeypatch.setattr(service_cmds, "check_port_free", lambda host, port: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(app.state.service.settings.idle_reset_seconds))
    runner = CliRunner()
    assert runner.invoke(cli, ["serve", "--idle-reset-seconds", "30"]).exit_code == 0
    assert runner.invoke(cli, ["serve"], env={"SCINSEARCH_IDLE_RESET_SECONDS": "0"}).exit_code == 0
    assert runner.invoke(cli, ["serve"]).exit_code == 0
    assert seen == [30, 0, ServiceSettings().idle_reset_seconds]
    refused = runner.invoke(cli, ["serve", "--idle-reset-seconds", "-1"])
    assert refused.exit_code == 2 and "idle-reset-seconds" in refused.output
