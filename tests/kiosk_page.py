"""Helpers for the kiosk page's browser test: the browser, the viewports, axe-core, screenshots, and
the in-page measurements (focus ring contrast, sideways overflow, what covers what).

The browser is Debian's chromium + chromedriver driven by Selenium; axe-core comes from its npm
package (tests/browser/package.json, installed by `.ci/run` with `npm ci`), injected into the page, so
nothing is fetched at run time. Missing pieces skip the test with the reason, or fail it when
SCINSEARCH_REQUIRE_BROWSER=1 (CI sets it, so a CI run never passes without the browser test)."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
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
    "--lang=en-US",
]
VIEWPORTS = {"kiosk": (1080, 1920, False), "phone": (412, 915, True), "narrow": (320, 640, True)}


def missing_tools() -> str:
    """Why the browser test cannot run here ('' when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not CHROMIUM or not Path(CHROMEDRIVER).exists():
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if not AXE.is_file():
        return "axe-core is not installed (npm ci --prefix tests/browser)"
    return ""


def require_tools() -> None:
    """Skip the module with the reason, or fail it when SCINSEARCH_REQUIRE_BROWSER=1."""
    reason = missing_tools()
    if reason and os.environ.get("SCINSEARCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the kiosk browser test cannot run: {reason} (SCINSEARCH_REQUIRE_BROWSER=1)", pytrace=False)
    if reason:
        pytest.skip(reason, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """`app` served by uvicorn in a background thread on loopback; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def start_browser(temporary: Path):
    """Chromium driven by chromedriver; both keep their temporary files (the profile, shared memory
    with --disable-dev-shm-usage) in `temporary`, not in /tmp, where Chromium leaves some behind."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": str(temporary)})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


# The browser tests' two fixtures, taken into each module by name (`browser = kiosk_page.browser`):
# module-scoped, so every module gets its own browser.


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_browser(tmp_path_factory.mktemp("chrome"))
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def no_script_errors(browser):
    """Every test ends without a JavaScript error in the console (the deliberate 4xx answers aside)."""
    browser.get_log("browser")
    yield
    errors = [
        entry
        for entry in browser.get_log("browser")
        if entry.get("level") == "SEVERE" and entry.get("source") != "network"
    ]
    assert not errors, errors


def set_viewport(driver, name: str) -> None:
    width, height, mobile = VIEWPORTS[name]
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def open_page(driver, url: str, viewport: str = "kiosk") -> None:
    set_viewport(driver, viewport)
    driver.get(url + "/")
    wait(driver, lambda d: d.execute_script("return document.documentElement.dataset.ready"), 30)


def wait(driver, condition, seconds: float = 60):
    """Until `condition(driver)` holds, checked every 30 ms (each check is one round trip to the browser)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.03).until(condition)


def axe_violations(driver) -> list[str]:
    """axe-core's violations on the page as it is now, one line each (rule, impact, first targets)."""
    if not driver.execute_script("return typeof window.axe !== 'undefined'"):
        driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => "
        "  v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))))"
        ".catch(e => done(['axe failed: ' + e]));"
    )
    return result


def screenshot(driver, name: str) -> Path:
    """The whole page (beyond the viewport) as a PNG in test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")  # the sticky banner then sits at the top of the picture
    width = driver.execute_script("return document.documentElement.clientWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 8000), "scale": 1},
        },
    )
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


# In-page measurements ------------------------------------------------------------------------------

CONTRAST_JS = """
function rgba(text) {
  const m = text.match(/rgba?\\(([^)]+)\\)/);
  if (!m) return [0, 0, 0, 0];
  const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}
function luminance(c) {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
}
function backgroundBehind(node) {
  for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
    const c = rgba(getComputedStyle(n).backgroundColor);
    if (c[3] > 0.5) return c;
  }
  return [255, 255, 255, 1];
}
function contrast(a, b) {
  const [l1, l2] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (l1 + 0.05) / (l2 + 0.05);
}
"""

FOCUS_JS = (
    CONTRAST_JS
    + """
const el = document.activeElement;
if (!el || el === document.body) return null;
const style = getComputedStyle(el);
const rect = el.getBoundingClientRect();
const banner = document.querySelector('.banner').getBoundingClientRect();
return {id: el.id, tag: el.tagName, type: el.type || '',
        text: (el.getAttribute('aria-label') || el.textContent).trim().slice(0, 60),
        outlineStyle: style.outlineStyle, outlineWidth: parseFloat(style.outlineWidth),
        contrast: contrast(rgba(style.outlineColor), backgroundBehind(el.parentElement || el)),
        coveredByBanner: !el.closest('.banner') && rect.top < banner.bottom - 1 && rect.bottom > 0,
        visible: rect.width > 0 && rect.height > 0};
"""
)

BORDER_CONTRAST_JS = (
    CONTRAST_JS
    + """
return [...document.querySelectorAll('.input, .select, .card, .filters, .suggestions')]
  .filter(n => n.getBoundingClientRect().width > 0)
  .map(n => ({what: n.id || n.className, contrast: contrast(rgba(getComputedStyle(n).borderTopColor),
                                                             backgroundBehind(n.parentElement))}));
"""
)

OVERFLOW_JS = """
const width = document.documentElement.clientWidth;
const wide = [...document.querySelectorAll('body *')].filter(n => {
  const r = n.getBoundingClientRect();
  return r.width > 0 && (r.right > width + 0.5 || r.left < -0.5) && !n.closest('.visually-hidden');
}).map(n => n.tagName + (n.id ? '#' + n.id : '') + '.' + n.className + ' '
            + Math.round(n.getBoundingClientRect().right));
return {scroll: document.documentElement.scrollWidth, width: width, wide: wide.slice(0, 10)};
"""

FETCH_SPY_JS = """
// Record every request; optionally merge window.__patch into /search answers (a backend still to come), and
// with window.__holdPhoto set, hold a photo search back until the test calls window.__releasePhoto(), deaf to
// the page's abort (a slow network that answers late); window.__photoHandled turns true once the page has
// had that late answer (its JSON read, and the page's code run on it) in hand.
if (!window.__spy) {
  window.__spy = true; window.__calls = []; window.__patch = null; window.__holdPhoto = false;
  window.__photoHandled = false;
  const realFetch = window.fetch.bind(window);
  window.fetch = async (url, options) => {
    window.__calls.push((options && options.method || 'GET') + ' ' + String(url));
    if (window.__holdPhoto && String(url).startsWith('/search?')) {
      await new Promise(resolve => { window.__releasePhoto = resolve; });
      options = Object.assign({}, options, {signal: undefined});
      const late = await realFetch(url, options);
      const json = late.json.bind(late);
      late.json = async () => {
        const body = await json();
        setTimeout(() => { window.__photoHandled = true; }, 0);  // after the page's promise callbacks
        return body;
      };
      return late;
    }
    const response = await realFetch(url, options);
    if (!window.__patch || !String(url).startsWith('/search') || !response.ok) return response;
    const body = Object.assign(await response.json(), window.__patch);
    return new Response(JSON.stringify(body), {status: 200, headers: {'Content-Type': 'application/json'}});
  };
}
"""
