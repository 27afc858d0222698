"""The explore page in a real headless browser (Debian's chromium, Selenium, axe-core; see kiosk_page.py).

Served at /explore over a collection embedded from the synthetic release, and as the offline report
opened from disk with the network blocked: the record, the coverage tables, one mark per point, hover
(thumbnail, condition, skin type), click (its case and its nearest images of other cases), the keyboard,
zero axe violations. Then 10,000 generated points: the render time is measured and written to
test-artifacts/explore-render.json (docs/explore.md quotes it). Screenshots go to test-artifacts/.

Skipped with the reason when chromium, chromedriver, selenium or axe-core is missing; failed instead
when SCINSEARCH_REQUIRE_BROWSER=1 (set by .ci/run)."""

from __future__ import annotations

import json
import time

import pytest

import kiosk_page
from explore_data import INFO, clean_collection
from kiosk_page import ARTIFACTS, axe_violations, require_tools, serving, wait
from scinsearch.explore import explore_points, explore_store, write_report
from scinsearch.service import ServiceSettings, create_app

require_tools()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

TABLES = ("condition", "self_fitzpatrick", "dermatologist_fitzpatrick", "monk_us", "body_part", "split")
MATRICES = ("conditions_by_self_skin", "conditions_by_dermatologist_skin")
GENERATED_POINTS = 10_000
FREEZE_MS = 10_000  # a first render slower than this would read as a frozen page

browser, no_script_errors = kiosk_page.browser, kiosk_page.no_script_errors  # autouse: no JavaScript error


@pytest.fixture(scope="module")
def searcher(clean_searcher):
    """The shared embedded searcher (conftest), under this module's name."""
    return clean_searcher


@pytest.fixture(scope="module")
def server(searcher):
    with serving(create_app(ServiceSettings(warm_up=False, idle_reset_seconds=0), searcher=searcher)) as url:
        yield url


def open_explore(driver, url: str, seconds: float = 60) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.documentElement.dataset.ready"), seconds)
    assert driver.execute_script("return document.documentElement.dataset.ready") == "1"


def point_at(driver, index: int) -> None:
    """Move the pointer onto the mark of point `index` (where the page drew it)."""
    where = driver.execute_script("return window.scinExplore.where(arguments[0])", index)
    canvas = driver.find_element(By.ID, "map")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    where = driver.execute_script("return window.scinExplore.where(arguments[0])", index)
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top]", canvas)
    offset = (round(where["x"] - rect[0]), round(where["y"] - rect[1]))
    size = canvas.size
    ActionChains(driver).move_to_element_with_offset(
        canvas, offset[0] - size["width"] // 2, offset[1] - size["height"] // 2
    ).perform()


def image_loaded(driver, element_id: str) -> bool:
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0", element_id
    )


def data_of(driver) -> dict:
    return driver.execute_script(
        "const e = document.getElementById('explore-data');"
        "return e ? JSON.parse(e.textContent) : fetch('/explore/data').then(r => r.json())"
    )


def check_page(driver, points: int, model: str) -> None:
    """What both the served page and the report must show and do."""
    record = dict(
        zip(
            [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#record dt")],
            [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#record dd")],
        )
    )
    assert record["model"] == model and record["points"] == f"{points:,}"
    assert {"vector size", "preprocessing", "cases", "splits", "calibration", "adapter"} <= set(record)
    assert not driver.find_element(By.ID, "key-form").is_displayed()  # asked for only after a 401
    for table in TABLES + MATRICES:
        assert driver.find_elements(By.CSS_SELECTOR, f"#table-{table} tbody tr"), table
    canvas = driver.find_element(By.ID, "map")
    assert int(canvas.get_attribute("data-marks")) == points  # one mark per point

    data = data_of(driver)
    index = max(range(points), key=lambda i: len(data["points"]["neighbours"][i]))
    image_id = data["points"]["image"][index]
    point_at(driver, index)
    wait(driver, lambda d: d.find_element(By.ID, "tooltip").is_displayed())
    tooltip = driver.find_element(By.ID, "tooltip-text").text
    assert image_id in tooltip and "skin type" in tooltip
    wait(driver, lambda d: image_loaded(d, "tooltip-image"))  # its thumbnail

    ActionChains(driver).click().perform()
    wait(driver, lambda d: d.find_element(By.ID, "point-panel").is_displayed())
    assert image_id in driver.find_element(By.ID, "point-heading").text
    neighbours = driver.find_elements(By.CSS_SELECTOR, "#point-neighbours button")
    assert len(neighbours) == len(data["points"]["neighbours"][index]) > 0
    other = data["points"]["image"][data["points"]["neighbours"][index][0]]
    neighbours[0].click()
    wait(driver, lambda d: other in d.find_element(By.ID, "point-heading").text)

    # The keyboard alone: onto the map, move, open.
    canvas.send_keys(Keys.ESCAPE)
    canvas.send_keys(Keys.ARROW_RIGHT)
    wait(driver, lambda d: d.find_element(By.ID, "map-live").text.startswith("Image "))
    canvas.send_keys(Keys.ENTER)
    assert driver.execute_script("return document.activeElement.id") == "point-heading"

    Select(driver.find_element(By.ID, "colour-by")).select_by_value("split")
    legend = driver.find_element(By.ID, "legend").text
    assert "train" in legend
    assert axe_violations(driver) == []


def test_explore_served(browser, server, searcher):
    open_explore(browser, server + "/explore")
    check_page(browser, searcher.store.count(), searcher.info.model)
    # The picture in docs/explore.md (a copy of test-artifacts/explore.png): the map by condition, one image pointed at.
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1000, "height": 760, "deviceScaleFactor": 1, "mobile": False}
    )
    Select(browser.find_element(By.ID, "colour-by")).select_by_value("condition")
    browser.find_element(By.ID, "map").send_keys(Keys.ESCAPE)
    upper_middle = browser.execute_script(
        "const c = document.getElementById('map').getBoundingClientRect(), n = arguments[0];"
        "const d = (i) => { const w = window.scinExplore.where(i);"
        "  return (w.x - c.left - c.width / 2) ** 2 + (w.y - c.top - c.height / 3) ** 2; };"
        "return [...Array(n).keys()].reduce((best, i) => (d(i) < d(best) ? i : best), 0);",
        searcher.store.count(),
    )
    point_at(browser, upper_middle)
    wait(browser, lambda d: image_loaded(d, "tooltip-image"))
    browser.execute_script("window.scrollTo(0, document.getElementById('map-heading').offsetTop - 8)")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "explore.png"))


def test_explore_asks_for_the_access_key(browser, searcher):
    app = create_app(ServiceSettings(warm_up=False, idle_reset_seconds=0, api_key="tab-key"), searcher=searcher)
    with serving(app) as url:
        browser.get(url + "/explore")
        wait(browser, lambda d: d.execute_script("return document.documentElement.dataset.ready") == "error")
        form_key = browser.find_element(By.ID, "key")
        assert form_key.is_displayed()
        assert axe_violations(browser) == []
        form_key.send_keys("tab-key", Keys.ENTER)
        wait(browser, lambda d: d.execute_script("return document.documentElement.dataset.ready") == "1")
        assert int(browser.find_element(By.ID, "map").get_attribute("data-marks")) == searcher.store.count()
        browser.execute_script("sessionStorage.clear()")


def test_explore_report_from_disk_with_the_network_blocked(browser, searcher, clean_release, tmp_path):
    document = explore_store(searcher.store, images_root=clean_release)
    assert len(document["thumbs"]) == searcher.store.count()
    report = write_report(document, tmp_path / "report.html")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    try:
        open_explore(browser, report.as_uri())
        check_page(browser, searcher.store.count(), searcher.info.model)
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched == []  # everything was in the file
    finally:
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        browser.execute_cdp_cmd("Network.disable", {})


def test_ten_thousand_points_render_without_freezing(browser, tmp_path):
    collection = clean_collection(conditions=40, cases=125, images=2, dim=32)
    assert len(collection.points) == GENERATED_POINTS
    document = explore_points(collection.points, "generated", INFO)
    report = write_report(document, tmp_path / "generated.html")
    started = time.perf_counter()
    open_explore(browser, report.as_uri())
    loaded = (time.perf_counter() - started) * 1000
    canvas = browser.find_element(By.ID, "map")
    assert int(canvas.get_attribute("data-marks")) == GENERATED_POINTS
    render_ms = float(browser.execute_script("return document.documentElement.dataset.renderMs"))
    draw_ms = float(canvas.get_attribute("data-draw-ms"))
    hovered = time.perf_counter()
    point_at(browser, 1234)
    wait(browser, lambda d: d.find_element(By.ID, "tooltip").is_displayed(), 5)
    hover_ms = (time.perf_counter() - hovered) * 1000
    assert not browser.find_element(By.ID, "tooltip-image").is_displayed()  # no thumbnails here: no broken image
    Select(browser.find_element(By.ID, "colour-by")).select_by_value("derm_skin")
    redraw_ms = float(canvas.get_attribute("data-draw-ms"))
    measured = {
        "points": GENERATED_POINTS,
        "report_bytes": report.stat().st_size,
        "page_render_ms": render_ms,
        "map_draw_ms": draw_ms,
        "map_redraw_ms": redraw_ms,
        "open_to_ready_ms": round(loaded, 1),
        "hover_to_tooltip_ms": round(hover_ms, 1),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "explore-render.json").write_text(json.dumps(measured, indent=2) + "\n")
    print("explore render at 10k points:", measured)
    assert render_ms < FREEZE_MS
