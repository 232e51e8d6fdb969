"""The completion page (`glcic_tf/serving/static/index.html`), as the embedded server serves it.

The page is one self-contained HTML file (no CDN, no fonts, no build step) that talks only to
TensorFlow Serving's REST API, so the same file works in front of a real tensorflow_model_server
behind a reverse proxy (serving/README.md). The embedded server fills in the names of the models
it serves, so the page's model field starts on the first one; everything else the page learns
from `GET /v1/models/NAME` and its metadata.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from importlib import resources
from typing import Sequence

UI_PATH = "/ui"
PAGE_RESOURCE = ("serving", "static", "index.html")
_CONFIG_PLACEHOLDER = '<script id="glcic-config" type="application/json">{}</script>'
# The page loads nothing from elsewhere; it may call a REST API on another origin (its
# "Server" field), and shows images it made itself (blob: URLs).
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; "
                           "style-src 'unsafe-inline'; img-src 'self' blob: data:; "
                           "connect-src * blob:; base-uri 'none'; form-action 'none'")


def page_source() -> str:
    """The page as shipped (no model names filled in): what to put behind a proxy."""
    return resources.files("glcic_tf").joinpath(*PAGE_RESOURCE).read_text(encoding="utf-8")


def page_html(model_names: Sequence[str]) -> str:
    """The page with the embedded server's model names, so its model field starts on one."""
    source = page_source()
    if _CONFIG_PLACEHOLDER not in source:
        raise RuntimeError(f"glcic_tf/{'/'.join(PAGE_RESOURCE)} lost its config placeholder "
                           f"{_CONFIG_PLACEHOLDER!r}")
    # Escaped "<": a model name can never close the script element.
    config = json.dumps({"models": list(model_names)}).replace("<", "\\u003c")
    return source.replace(_CONFIG_PLACEHOLDER,
                          f'<script id="glcic-config" type="application/json">{config}</script>')


def page_response(model_names: Sequence[str]):
    """Starlette response for GET /ui."""
    from starlette.responses import HTMLResponse

    return HTMLResponse(page_html(model_names), headers={
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    })


def _local_host(host: str) -> str:
    """Where to reach a server listening on `host` from this machine (wildcards: loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def page_url(host: str, port: int) -> str:
    """The page's URL for a server listening on host:port (a wildcard host means localhost)."""
    host = _local_host(host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{UI_PATH}"


def open_in_browser_when_up(host: str, port: int,
                            timeout_seconds: float = 120.0) -> threading.Thread:
    """Opens the page in the user's browser once the server accepts connections (a thread)."""
    import webbrowser

    url = page_url(host, port)
    connect_host = _local_host(host)

    def wait_then_open():
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((connect_host, port), timeout=1.0):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            return
        webbrowser.open(url)

    thread = threading.Thread(target=wait_then_open, name="glcic-open-browser", daemon=True)
    thread.start()
    return thread


def find_chromium() -> tuple[str | None, str | None]:
    """(browser, chromedriver) executables on PATH, None where missing."""
    import shutil

    found = (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
    browser = next((path for path in found if path), None)
    return browser, shutil.which("chromedriver")


def headless_chromium(width: int = 1280, height: int = 900):
    """A Selenium WebDriver on headless Chromium (tests and `pipelines/ui_screenshot.py`).

    Needs the `selenium` package (a test dependency) and Chromium with its driver on PATH
    (Debian: `apt-get install chromium chromium-driver`); RuntimeError names what is missing.
    """
    browser, driver = find_chromium()
    if not browser or not driver:
        raise RuntimeError("no Chromium and chromedriver on PATH (Debian: apt-get install "
                           "chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--disable-extensions", "--no-first-run", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)
