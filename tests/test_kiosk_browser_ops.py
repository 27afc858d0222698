"""The kiosk page and /docs in headless chromium (issue 22): the answer comes into view and takes the
focus, the text box says in the page's language that descriptions must be English, and /docs renders
the API's operations offline. Uses the fixtures and helpers of tests/test_kiosk_browser.py."""

from __future__ import annotations

import kiosk_page
import test_kiosk_browser as kiosk  # first: it skips the module when the browser is missing
from kiosk_page import open_page, screenshot, wait
from test_kiosk_browser import EN, SW, By, assert_clean_axe, cards, choose, shown, upload

# The browser test's fixtures, shared by name (module-scoped: this module gets its own server and browser).
server, photo, not_a_photo = kiosk.server, kiosk.photo, kiosk.not_a_photo
browser, no_script_errors = kiosk_page.browser, kiosk_page.no_script_errors  # autouse: no JavaScript error

FOCUSED_JS = """
const el = document.activeElement;
const rect = el.getBoundingClientRect();
const banner = document.querySelector('.banner').getBoundingClientRect();
return {id: el.id, top: rect.top, bottom: rect.bottom, bannerBottom: banner.bottom,
        height: window.innerHeight, scrolled: window.scrollY};
"""


def assert_focus_in_view(driver, element_id: str) -> None:
    """The focused element is `element_id`, wholly on screen and below the sticky banner."""
    focus = driver.execute_script(FOCUSED_JS)
    assert focus["id"] == element_id, focus
    assert focus["bannerBottom"] - 1 <= focus["top"] and focus["bottom"] <= focus["height"], focus


def test_the_answer_comes_into_view_and_takes_the_focus_on_a_phone(server, browser, photo, not_a_photo):
    open_page(browser, server, "phone")  # 412x915
    upload(browser, photo)
    wait(browser, lambda d: len(cards(d)) >= 3)
    assert_focus_in_view(browser, "status")
    assert browser.find_element(By.ID, "status").get_attribute("role") == "status"
    screenshot(browser, "phone-answer-in-view.png")

    browser.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
    browser.find_element(By.ID, "text").send_keys("red rash")
    browser.find_element(By.CSS_SELECTOR, "#text-form button[type=submit]").click()
    wait(browser, lambda d: len(cards(d)) >= 3 and d.execute_script("return document.activeElement.id") == "status")
    assert_focus_in_view(browser, "status")

    browser.execute_script("window.scrollTo(0, 0)")
    upload(browser, not_a_photo)  # an error is the answer: it comes into view the same way
    wait(browser, lambda d: d.find_element(By.ID, "alert").text.strip())
    wait(browser, lambda d: d.execute_script("return document.activeElement.id") == "alert")
    assert_focus_in_view(browser, "alert")


def test_the_text_box_says_in_the_page_s_language_that_descriptions_are_english(server, browser):
    open_page(browser, server, "phone")
    text = browser.find_element(By.ID, "text")
    try:
        assert not shown(browser, "text-english")  # English needs no note
        assert text.get_attribute("lang") == "en" and text.get_attribute("placeholder") == "itchy red ring on the arm"
        choose(browser, "language", "sw")
        wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == SW["title"])
        note = browser.find_element(By.ID, "text-english")
        assert note.is_displayed() and note.text == SW["text_english_only"] and note.text != EN["text_english_only"]
        assert text.get_attribute("aria-describedby") == "text-english"
        assert text.get_attribute("placeholder") == "itchy red ring on the arm"  # the example stays English
        assert_clean_axe(browser, "Swahili text box")
        screenshot(browser, "phone-swahili-text-note.png")
    finally:
        choose(browser, "language", "en")  # the choice is remembered: leave the next test in English
        wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text == EN["title"])
    assert not shown(browser, "text-english")


def test_api_docs_render_the_operations_offline(server, browser):
    browser.get(server + "/docs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5, seconds=60)
    paths = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/search", "/search/text", "/images/{image_id}/similar"} <= {p.replace("\u200b", "") for p in paths}
    assert "Unable to render" not in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.execute_script(  # nothing loaded from another host
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(url => !url.startsWith(location.origin))"
    )
    screenshot(browser, "api-docs.png")
