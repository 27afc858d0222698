"""The kiosk page in a real headless browser (Debian's chromium, Selenium, axe-core from npm).

At a 1080x1920 kiosk, a 412x915 phone and a 320-px-wide screen: zero axe violations on the empty,
results, no-results and error pages; a failed upload leaves nothing of the previous answer; every
focused control shows a ring of at least 3:1 that the sticky banner does not hide; nothing scrolls
sideways. Then the flows: language switch, "New patient", the idle reset, quality warnings, the
dialog, the camera button. Screenshots of each state go to test-artifacts/.

Skipped with the reason when chromium, chromedriver, selenium or axe-core is missing; failed instead
when SCINSEARCH_REQUIRE_BROWSER=1 (set by .ci/run)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import kiosk_page
from kiosk_page import (
    BORDER_CONTRAST_JS,
    FETCH_SPY_JS,
    FOCUS_JS,
    OVERFLOW_JS,
    VIEWPORTS,
    axe_violations,
    open_page,
    require_tools,
    screenshot,
    serving,
    wait,
)
from scinsearch import suggest
from scinsearch.service import ServiceSettings, create_app
from scinsearch.service.app import STATIC_DIR

require_tools()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

EN = json.loads((STATIC_DIR / "i18n" / "en.json").read_text(encoding="utf-8"))
SW = json.loads((STATIC_DIR / "i18n" / "sw.json").read_text(encoding="utf-8"))


RED_FLAG = "Herpes Zoster"  # on the red-flag list (referral), with a glossary entry

browser, no_script_errors = kiosk_page.browser, kiosk_page.no_script_errors  # autouse: no JavaScript error


def relabel(store, image_name: str, condition: str) -> None:
    """Plant a red-flag label on the case of the photo the tests upload (so it is among its own neighbours)."""
    case_ids = {
        case
        for p in store.scroll()
        if str(p.payload.get("image_path", "")).endswith(image_name)
        for case in p.payload["case_ids"]
    }
    points = [p for p in store.scroll(with_vectors=True) if set(p.payload["case_ids"]) & case_ids]
    for point in points:
        labels = {condition: 1.0}
        point.payload.update(weighted_labels=labels, conditions=[condition], condition=condition, labelled=True)
    store.upsert(points)
    store.finish_writes()


@pytest.fixture(scope="module")
def server(clean_searcher, clean_release):
    """The service with the idle reset off (the idle test starts its own with a short one), over this
    module's store, where the case of the photo the tests upload carries a red-flag label."""
    relabel(clean_searcher.store, next((clean_release / "dataset" / "images").glob("*.png")).name, RED_FLAG)
    with serving(create_app(ServiceSettings(warm_up=False, idle_reset_seconds=0), searcher=clean_searcher)) as url:
        yield url


@pytest.fixture(scope="module")
def photo(clean_release):
    return next((clean_release / "dataset" / "images").glob("*.png"))


@pytest.fixture(scope="module")
def not_a_photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("uploads") / "notes.png"
    path.write_text("shopping list: not a picture at all\n")
    return path


@pytest.fixture(scope="module")
def empty_filters(server):
    """A skin type and age group that every stored case lacks together (found through the API)."""
    choices = httpx.get(server + "/filters").json()["choices"]
    for skin in choices["fitzpatrick"]:
        for age in choices["age_groups"]:
            answer = httpx.post(
                server + "/search/text",
                params={"fitzpatrick": skin, "age_groups": age},
                json={"text": "red rash", "top_k": 12},
                timeout=30,
            ).json()
            if answer["results"] == []:
                return {"fitzpatrick": skin, "age_groups": age}
    pytest.fail("the synthetic release has a case for every skin type and age group")


def cards(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def loaded_cards(driver) -> list:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).map(img => img.currentSrc);"
    )


def shown(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def upload(driver, path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def choose(driver, select_id: str, value: str) -> None:
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def assert_clean_axe(driver, state: str) -> None:
    violations = axe_violations(driver)
    assert violations == [], f"axe on the {state} page: {violations}"


def assert_no_overflow(driver) -> None:
    overflow = driver.execute_script(OVERFLOW_JS)
    assert overflow["scroll"] <= overflow["width"] and not overflow["wide"], overflow


def assert_finger_sized(driver, minimum: int) -> None:
    sizes = driver.execute_script(
        "return [...document.querySelectorAll('button, select, summary, input:not([type=file])')]"
        ".filter(n => n.getBoundingClientRect().width > 0 && !n.closest('.visually-hidden'))"
        ".map(n => [n.id || n.className || n.tagName, Math.round(n.getBoundingClientRect().height)]);"
    )
    assert sizes and all(height >= minimum for _, height in sizes), sizes


# The four states at three screen sizes -------------------------------------------------------------


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_states_are_accessible_and_never_stale(server, browser, photo, not_a_photo, empty_filters, viewport):
    open_page(browser, server, viewport)
    assert shown(browser, "disclaimer") and shown(browser, "choose-file")
    assert_clean_axe(browser, "empty")
    assert_no_overflow(browser)
    screenshot(browser, f"{viewport}-1-empty.png")

    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 3)
    browser.execute_script("document.getElementById('results').scrollIntoView()")  # below the referral notice
    wait(browser, lambda d: len(loaded_cards(d)) >= 3)
    assert shown(browser, "suggestions") and shown(browser, "preview-box")
    first = cards(browser)[0].text
    assert EN["similarity"] in first and EN["skin_type"] in first and "Unknown age" not in first
    names = browser.execute_script(
        "return [...document.querySelectorAll('#results .card button')]"
        ".map(b => b.getAttribute('aria-label') || b.textContent)"
    )
    assert len(names) == 2 * len(cards(browser)) and len(set(names)) == len(names)  # named by their case
    assert_clean_axe(browser, "results")
    assert_no_overflow(browser)
    assert_finger_sized(browser, 56)
    contrasts = browser.execute_script(BORDER_CONTRAST_JS)
    assert contrasts and all(item["contrast"] >= 3 for item in contrasts), contrasts
    screenshot(browser, f"{viewport}-2-results.png")

    upload(browser, not_a_photo)  # the next file is not a photo: nothing of the first answer may stay
    wait(browser, lambda d: d.find_element(By.ID, "alert").text.strip())
    alert = browser.find_element(By.ID, "alert")
    assert alert.get_attribute("role") == "alert" and alert.text == EN["error_not_an_image"]
    assert cards(browser) == [] and not shown(browser, "suggestions") and not shown(browser, "results-section")
    assert not shown(browser, "preview-box") and not browser.find_element(By.ID, "preview").get_attribute("src")
    assert_clean_axe(browser, "error")
    assert_no_overflow(browser)
    screenshot(browser, f"{viewport}-3-error.png")

    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    for name, value in empty_filters.items():
        choose(browser, f"filter-{name}", value)
    assert browser.find_element(By.ID, "filter-count").text == "2 chosen"
    browser.find_element(By.ID, "text").send_keys("red rash")
    browser.find_element(By.CSS_SELECTOR, "#text-form button[type=submit]").click()
    wait(browser, lambda d: shown(d, "empty"))
    assert browser.find_element(By.ID, "empty-text").text == EN["empty_filters"]
    assert not shown(browser, "suggestions") and not browser.find_element(By.ID, "alert").text
    assert_clean_axe(browser, "no-results")
    assert_no_overflow(browser)
    screenshot(browser, f"{viewport}-4-no-results.png")
    action = browser.find_element(By.ID, "empty-action")
    assert action.text == EN["clear_filters_search"]
    action.click()
    wait(browser, lambda d: len(cards(d)) >= 3)
    assert browser.find_element(By.ID, "filter-count").text == "" and not shown(browser, "empty")


# Keyboard ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", ["kiosk", "narrow"])
def test_every_focus_is_visible_and_not_hidden_by_the_banner(server, browser, photo, viewport):
    open_page(browser, server, viewport)
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 3)
    browser.execute_script("document.querySelector('.banner-link').focus()")
    seen = []
    for backwards in [False] * 20 + [True] * 12:
        keys = ActionChains(browser)
        (keys.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT) if backwards else keys.send_keys(Keys.TAB))
        keys.perform()
        focus = browser.execute_script(FOCUS_JS)
        assert focus and focus["visible"], f"focus fell to the page after {seen}"
        assert focus["type"] != "file", "a hidden file input took the focus"
        assert focus["outlineStyle"] != "none" and focus["outlineWidth"] >= 2, focus
        assert focus["contrast"] >= 3, focus
        assert not focus["coveredByBanner"], focus
        seen.append(focus["id"] or focus["text"])
    assert {"choose-file", "text", "language", "new-patient"} <= set(seen)
    assert any(EN["more_like_this"] in name for name in seen)

    more = browser.find_element(By.CSS_SELECTOR, "#results .card:nth-child(2) .more")
    browser.execute_script("arguments[0].focus()", more)
    ActionChains(browser).send_keys(Keys.ENTER).perform()  # "More like this": focus goes to the new answer
    wait(browser, lambda d: d.execute_script("return document.activeElement.id") == "results-heading")
    assert "case 2" in browser.find_element(By.ID, "results-heading").text and cards(browser)


def test_dialog_has_a_name_and_closes_on_escape_and_backdrop(server, browser, photo):
    open_page(browser, server, "phone")
    upload(browser, photo)
    wait(browser, lambda d: len(loaded_cards(d)) >= 1)
    opener = browser.find_element(By.CSS_SELECTOR, "#results .card .photo")
    opener.click()
    wait(browser, lambda d: d.execute_script("return document.getElementById('viewer').open"))
    title = browser.find_element(By.ID, "viewer-title").text
    assert title.startswith("case 1") and opener.get_attribute("aria-label").endswith(title)
    assert_clean_axe(browser, "dialog")
    screenshot(browser, "phone-dialog.png")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    wait(browser, lambda d: not d.execute_script("return document.getElementById('viewer').open"))
    opener.click()
    wait(browser, lambda d: d.execute_script("return document.getElementById('viewer').open"))
    tap = ActionBuilder(browser)
    tap.pointer_action.move_to_location(4, 4).click()  # the dark backdrop in a corner, outside the dialog
    tap.perform()
    wait(browser, lambda d: not d.execute_script("return document.getElementById('viewer').open"))


# Flows ---------------------------------------------------------------------------------------------


def test_language_switch_changes_the_page_and_is_remembered(server, browser, photo):
    open_page(browser, server, "phone")
    choose(browser, "language", "sw")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == SW["title"])
    assert browser.execute_script("return document.documentElement.lang") == "sw"
    browser.refresh()
    wait(browser, lambda d: d.execute_script("return document.documentElement.dataset.ready"))
    assert browser.find_element(By.TAG_NAME, "h1").text == SW["title"]  # remembered on this kiosk
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 3)
    assert SW["similarity"] in cards(browser)[0].text and SW["more_like_this"] in cards(browser)[0].text
    labelled = browser.find_elements(By.CSS_SELECTOR, "#results .card .condition span[lang=en]")
    assert labelled, "SCIN's English condition names are marked as English"
    assert_clean_axe(browser, "Swahili results")
    screenshot(browser, "phone-swahili.png")
    choose(browser, "language", "en")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == EN["title"])
    assert EN["similarity"] in cards(browser)[0].text  # the answer on screen is re-worded, not lost


def test_new_patient_clears_everything_and_releases_the_photo(server, browser, photo):
    open_page(browser, server, "kiosk")
    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    choose(
        browser,
        "filter-body_parts",
        Select(browser.find_element(By.ID, "filter-body_parts")).options[1].get_attribute("value"),
    )
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 1)
    preview_url = browser.find_element(By.ID, "preview").get_attribute("src")
    assert preview_url.startswith("blob:")
    browser.execute_script("window.scrollTo(0, 0)")  # the answer scrolled to the top of the screen; back up
    browser.find_element(By.ID, "new-patient").click()
    assert cards(browser) == [] and not shown(browser, "preview-box") and not shown(browser, "suggestions")
    assert browser.find_element(By.ID, "status").text == EN["status_reset"]
    assert (
        browser.execute_script(
            "return [...document.querySelectorAll('select[id^=filter-]')].map(s => s.value)"
            " .concat([document.getElementById('text').value]).join('')"
        )
        == ""
    )
    fate = browser.execute_async_script(  # an <img> may load blob: URLs here (the page's CSP allows it)
        "const done = arguments[arguments.length - 1]; const img = new Image();"
        "img.onload = () => done('alive'); img.onerror = () => done('revoked'); img.src = arguments[0];",
        preview_url,
    )
    assert fate == "revoked"
    screenshot(browser, "kiosk-new-patient.png")


def test_a_filter_change_searches_the_shown_photo_again_but_never_a_forgotten_one(server, browser, photo, not_a_photo):
    open_page(browser, server, "kiosk")
    browser.execute_script(FETCH_SPY_JS)
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 1)
    browser.execute_script("window.scrollTo(0, 0)")  # the answer scrolled to the top of the screen; back up
    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    choose(browser, "filter-fitzpatrick", "FST3")
    wait(browser, lambda d: sum("POST /search?" in call for call in d.execute_script("return window.__calls")) == 2)
    upload(browser, not_a_photo)
    wait(browser, lambda d: d.find_element(By.ID, "alert").text.strip())
    choose(browser, "filter-fitzpatrick", "FST4")  # a search would have called fetch during the change event
    calls = browser.execute_script("return window.__calls")
    assert sum("POST /search?" in call for call in calls) == 3, calls  # the photo, again, the non-photo; no more


def test_a_late_answer_for_an_earlier_search_is_dropped(server, browser, photo):
    open_page(browser, server, "kiosk")
    browser.execute_script(FETCH_SPY_JS + "window.__holdPhoto = true;")  # the photo's answer waits for us
    upload(browser, photo)
    wait(browser, lambda d: d.execute_script("return typeof window.__releasePhoto === 'function'"))
    browser.find_element(By.ID, "text").send_keys("itchy red ring")
    browser.find_element(By.CSS_SELECTOR, "#text-form button[type=submit]").click()
    wait(browser, lambda d: len(cards(d)) >= 1)
    text_answer = [card.get_attribute("data-image-id") for card in cards(browser)]
    browser.execute_script("window.__releasePhoto()")  # now the photo's answer comes back, late
    wait(browser, lambda d: d.execute_script("return window.__photoHandled"))
    assert [card.get_attribute("data-image-id") for card in cards(browser)] == text_answer
    assert browser.find_element(By.ID, "results-heading").text == "12 cases matching the description"
    assert not shown(browser, "preview-box")


def test_idle_reset_after_the_configured_time(clean_searcher, browser, photo):
    # 2 s: the page's shortest whole-second setting that still leaves the tiny model's search (~0.1 s) ample
    # time to answer before the page falls idle
    with serving(create_app(ServiceSettings(warm_up=False, idle_reset_seconds=2), searcher=clean_searcher)) as url:
        assert httpx.get(url + "/config").json()["idle_reset_seconds"] == 2
        open_page(browser, url, "phone")
        upload(browser, photo)
        wait(browser, lambda d: len(cards(d)) >= 1)
        wait(browser, lambda d: d.find_element(By.ID, "status").text == EN["status_idle_reset"], seconds=20)
        assert cards(browser) == [] and not shown(browser, "preview-box")
        screenshot(browser, "phone-idle-reset.png")


def check(name, verdict, code=None, reason="", advice=""):
    return {
        "name": name,
        "value": 0.1,
        "threshold": 0.2,
        "verdict": verdict,
        "code": code,
        "reason": reason,
        "advice": advice,
    }


def test_quality_warnings_above_the_results(server, browser, photo):
    open_page(browser, server, "phone")
    browser.execute_script(
        FETCH_SPY_JS + "window.__patch = arguments[0];",
        {
            "quality": {
                "ok": False,
                "checks": [
                    check("brightness", "warn", "too_dark"),
                    check("sharpness", "pass"),
                    check("gradability", "skipped"),
                    check("similarity", "warn", "nothing_alike"),
                    check("size", "warn", None, "The photo is 90 pixels wide.", "Move closer."),
                ],
            }
        },
    )
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 1)
    warnings = browser.find_elements(By.CSS_SELECTOR, "#quality li.warning")
    assert [w.get_attribute("data-code") for w in warnings] == ["too_dark", "nothing_alike", ""]
    assert warnings[0].text.startswith(EN["quality_too_dark"])
    assert warnings[1].text.startswith("No sufficiently similar case was found")
    assert warnings[2].text == "The photo is 90 pixels wide. Move closer."
    assert shown(browser, "results-section")  # still viewable below
    above = browser.execute_script(
        "return document.getElementById('quality').getBoundingClientRect().bottom <= "
        "document.getElementById('results-section').getBoundingClientRect().top"
    )
    assert above
    assert_clean_axe(browser, "quality warnings")
    screenshot(browser, "phone-quality.png")
    # no results, no filters, no warnings: the way on is a new photo
    browser.execute_script("window.__patch = {results: [], quality: null};")
    upload(browser, photo)
    wait(browser, lambda d: shown(d, "empty"))
    assert not shown(browser, "quality") and browser.find_element(By.ID, "empty-action").text == EN["retake_photo"]


def test_labelled_cases_only_with_plain_words_and_a_referral_notice_above_them(server, browser, photo):
    """Issue 22: the page lists only dermatologist-labelled cases; a red-flag condition among the cases
    the suggestion is drawn from shows a referral notice above everything else of the answer, in every
    language, also when the suggestion abstains; similarity and skin type are in words."""
    open_page(browser, server, "phone")
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 3 and shown(d, "refer"))
    texts = [card.text for card in cards(browser)]
    assert len(texts) == 12 and not [text for text in texts if EN["unlabelled"] in text]
    refer = browser.find_element(By.ID, "refer").text
    assert refer.startswith(EN["refer_heading"]) and RED_FLAG in refer and "Shingles" in refer
    order = browser.execute_script(
        "const top = (id) => document.getElementById(id).getBoundingClientRect().top;"
        "return [top('refer'), top('suggestions'), top('results-section')];"
    )
    assert order == sorted(order), order
    first = cards(browser)[0]
    assert EN["band_very_close"] in first.text and "1.00" not in first.text, "the number waits behind details"
    first.find_element(By.CSS_SELECTOR, "details.score summary").click()
    assert "1.00" in first.text
    assert all(any(EN[f"skin_words_FST{n}"] in text for n in range(1, 7)) for text in texts), texts
    assert_clean_axe(browser, "referral")
    screenshot(browser, "phone-referral.png")
    choose(browser, "language", "sw")
    wait(browser, lambda d: d.find_element(By.ID, "refer-heading").text == SW["refer_heading"])
    assert_clean_axe(browser, "referral in Swahili")
    choose(browser, "language", "en")
    # the suggestion abstains (suggestions off): the referral notice stays, above the reason
    browser.execute_script(
        FETCH_SPY_JS + "window.__patch = arguments[0];",
        {"suggestions": {"confident": False, "reason": suggest.SUGGESTIONS_OFF, "conditions": [], "neighbours": 5}},
    )
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 1 and shown(d, "refer"))
    assert browser.find_element(By.CSS_SELECTOR, "#suggestions .abstain").text == EN["abstain_off"]
    assert_clean_axe(browser, "referral with an abstaining suggestion")


def test_the_real_api_warns_about_a_dark_photo_above_the_results(server, browser, tmp_path):
    """No mock: the service's own quality checks, rendered by the page in the catalogue's words."""
    from PIL import Image

    dark = tmp_path / "dark.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 25, (480, 640, 3), dtype=np.uint8)).save(dark)  # a photo taken in the dark
    open_page(browser, server, "phone")
    upload(browser, dark)
    wait(browser, lambda d: len(cards(d)) >= 1 and shown(d, "quality"))
    warnings = browser.find_elements(By.CSS_SELECTOR, "#quality li.warning")
    assert "too_dark" in [w.get_attribute("data-code") for w in warnings]
    too_dark = next(w for w in warnings if w.get_attribute("data-code") == "too_dark")
    assert too_dark.text.startswith(EN["quality_too_dark"]) and EN["quality_too_dark_advice"] in too_dark.text
    assert shown(browser, "results-section")
    screenshot(browser, "phone-quality-real.png")


def test_take_photo_only_where_a_camera_is(server, browser):
    open_page(browser, server, "phone")
    assert not shown(browser, "take-photo")  # headless chromium has no camera
    fake = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": (
                "navigator.mediaDevices.enumerateDevices = async () => "
                "[{kind: 'videoinput', deviceId: '', groupId: '', label: ''}];"
            )
        },
    )
    try:
        open_page(browser, server, "phone")
        assert shown(browser, "take-photo")
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": fake["identifier"]})
