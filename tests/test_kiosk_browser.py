"""The kiosk page in a real headless browser (Debian's chromium + chromedriver, driven by Selenium):
upload a photo through the file input, see result cards whose pictures loaded, save a screenshot.

Skipped only when chromium, chromedriver or selenium is absent here; `.ci/run` installs them."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from scinsearch.dataset import read_release
from scinsearch.pipeline import run_embed
from scinsearch.search import Searcher
from scinsearch.service import ServiceSettings, create_app
from scinsearch.settings import Settings
from scinsearch.store import open_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not CHROMIUM or not Path(CHROMEDRIVER).exists():
    pytest.skip(
        "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, clean_release, tiny_embedder):
    """The app over a small real store, served by uvicorn in a background thread on loopback."""
    import uvicorn

    settings = Settings(
        qdrant_path=tmp_path_factory.mktemp("browser-store"), collection="browser", model=tiny_embedder.model_name
    )
    store = open_store(settings)
    run_embed(
        read_release(clean_release),
        tiny_embedder,
        store,
        batch_size=16,
        workers=0,
        progress=False,
        warn=lambda message: None,
    )
    searcher = Searcher(settings, embedder=tiny_embedder, store=store)
    port = free_port()
    uv = uvicorn.Server(
        uvicorn.Config(
            create_app(ServiceSettings(), searcher=searcher), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=30)
    searcher.close()
    store.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def loaded_cards(driver) -> list:
    """Result cards whose thumbnail has actually been decoded by the browser."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).map(img => img.currentSrc);"
    )


def save_full_page(driver, name: str) -> Path:
    """Screenshot of the whole page (the window grown to the page's height), as a test artefact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 140, 6000))
    driver.save_screenshot(str(path))
    return path


def test_upload_a_photo_and_see_cases_with_pictures(server, browser, clean_release):
    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filter-body_parts option")) > 1)
    assert browser.find_element(By.ID, "disclaimer").is_displayed()
    photo = next((clean_release / "dataset" / "images").glob("*.png"))
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 60).until(lambda d: len(loaded_cards(d)) >= 3)
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    assert "Similarity" in cards[0].text and "Skin type" in cards[0].text and "Body part" in cards[0].text
    assert all("/images/" in src and "size=thumb" in src for src in loaded_cards(browser))
    suggestions = browser.find_element(By.ID, "suggestions")
    assert suggestions.is_displayed() and "similar cases" in suggestions.text.lower()
    assert browser.find_element(By.ID, "disclaimer").is_displayed()
    screenshot = save_full_page(browser, "kiosk.png")
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_filter_and_text_search_on_a_phone_sized_screen(server, browser):
    browser.set_window_size(412, 915)
    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#filter-body_parts option")) > 1)
    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    browser.execute_script("const s = document.getElementById('filter-body_parts'); s.value = 'arm';")
    browser.find_element(By.ID, "text").send_keys("itchy red ring")
    browser.find_element(By.CSS_SELECTOR, "#text-form button").click()
    WebDriverWait(browser, 60).until(lambda d: len(loaded_cards(d)) >= 1)
    button = browser.find_element(By.CSS_SELECTOR, "#results .card .button")
    assert button.size["height"] >= 48  # a finger-sized target
    assert browser.find_element(By.ID, "disclaimer").is_displayed()
    save_full_page(browser, "kiosk-phone.png")
    errors = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not errors, errors
