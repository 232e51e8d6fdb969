"""The completion page at /ui, driven in a real browser (headless Chromium, Selenium).

The embedded server runs in-process on the shipped model, on a socket bound to port 0. The
browser gets real pointer events (mouse, touch, pen) from WebDriver actions, and every result
the page shows is checked against the pixels it sent and against `serving_default` run on
the same servable directly. A screenshot of the completed page is saved to
`$GLCIC_TEST_ARTIFACTS` (default: `test-artifacts/` in the repository).

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`; `.ci/run`
installs them); without them these tests skip and say so.
"""

from __future__ import annotations

import base64
import json
import os
import types

import numpy as np
import pytest
from PIL import Image

from glcic_tf.serving import page as ui_page
from glcic_tf.serving.app import create_app
from glcic_tf.serving.manager import ModelManager
from glcic_tf.serving.model_config import ModelConfig
from glcic_tf.serving.server import serving_in_thread

from helpers.images import decode, noise, png_bytes
from helpers.scripts import REPO

ARTIFACTS = os.environ.get("GLCIC_TEST_ARTIFACTS", os.path.join(REPO, "test-artifacts"))
MODEL = "glcic"
MAX_BODY = 1024 * 1024
WAIT_S = 60


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    from glcic_tf.inference import shipped

    manager = ModelManager([ModelConfig(MODEL, shipped.model_path())], poll_wait_seconds=0)
    app = create_app(manager, max_body_bytes=MAX_BODY, num_threads=2)
    with serving_in_thread(app) as url:
        yield types.SimpleNamespace(url=url, manager=manager)


@pytest.fixture(scope="module")
def driver():
    if not all(ui_page.find_chromium()):
        pytest.skip("no Chromium and chromedriver on PATH (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    browser = ui_page.headless_chromium()
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    """A real photograph shipped with scikit-image, at the shipped model's scale (160 px)."""
    import cv2
    import skimage.data

    image = skimage.data.coffee()
    scale = 160 / min(image.shape[:2])
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("ui") / "coffee.png"
    Image.fromarray(image).save(path)
    return str(path)


def _page(driver, server, query: str = ""):
    driver.get(f"{server.url}/ui{query}")
    _wait(driver, "window.glcicUI && glcicUI.state().modelOk || "
                  "(window.glcicUI && glcicUI.state().message)")
    return driver


def _wait(driver, condition_js: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(f"return !!({condition_js});"),
        message=f"page never satisfied: {condition_js}; state: "
                f"{driver.execute_script('return window.glcicUI && glcicUI.state()')}")


def _state(driver) -> dict:
    return driver.execute_script("return glcicUI.state();")


def _open(driver, path: str) -> None:
    driver.find_element("id", "file").send_keys(path)


def _decode(b64: str, mode: str = "RGB") -> np.ndarray:
    return decode(base64.b64decode(b64), mode)


def _canvas(driver, element_id: str) -> np.ndarray:
    url = driver.execute_script(
        f"return document.getElementById({element_id!r}).toDataURL('image/png');")
    return _decode(url.split(",", 1)[1])


def _stroke(driver, element, path, pointer: str = "mouse") -> None:
    """A stroke with real pointer events: down at path[0], moves through the rest, up."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    kind = {"mouse": interaction.POINTER_MOUSE, "touch": interaction.POINTER_TOUCH,
            "pen": interaction.POINTER_PEN}[pointer]
    actions = ActionBuilder(driver, mouse=PointerInput(kind, pointer), duration=20)
    x0, y0 = path[0]
    actions.pointer_action.move_to(element, x0, y0).pointer_down()
    for x, y in path[1:]:
        actions.pointer_action.move_to(element, x, y)
    actions.pointer_action.pointer_up()
    actions.perform()


def _keys(driver, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _ctrl(driver, key: str, shift: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    chain = ActionChains(driver).key_down(Keys.CONTROL)
    if shift:
        chain = chain.key_down(Keys.SHIFT)
    chain = chain.send_keys(key)
    if shift:
        chain = chain.key_up(Keys.SHIFT)
    chain.key_up(Keys.CONTROL).perform()


# Offsets from the overlay's centre, in screen pixels: a stroke across the coffee cup.
CUP_STROKE = [(-70, -10), (-35, 0), (0, 5), (35, 0), (70, -10)]


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_page_is_served_off_the_rest_api(server):
    import httpx

    r = httpx.get(f"{server.url}/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert f'"models": ["{MODEL}"]' in r.text
    # Nothing is fetched from elsewhere: no external scripts, styles, fonts or images.
    for needle in ("src=\"http", "href=\"http", "@import", "url(http", "<link"):
        assert needle not in r.text
    assert httpx.get(server.url, follow_redirects=False).headers["location"] == "/ui"
    # The TF Serving API is untouched.
    status = httpx.get(f"{server.url}/v1/models/{MODEL}").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    r = httpx.get(f"{server.url}/v1/ui")  # TF Serving's answer to a path it does not know
    assert r.status_code == 400 and "Malformed request" in r.json()["error"]


def test_page_config_is_escaped_and_ui_can_be_turned_off(server):
    import httpx

    html = ui_page.page_html(["a</script><b>", "glcic"])
    config = html.split('<script id="glcic-config" type="application/json">', 1)[1]
    config = config.split("</script>", 1)[0]
    assert "<" not in config and json.loads(config) == {"models": ["a</script><b>", "glcic"]}
    assert ui_page.page_url("0.0.0.0", 8501) == "http://127.0.0.1:8501/ui"
    assert ui_page.page_url("::1", 80) == "http://[::1]:80/ui"

    app = create_app(server.manager, manage_lifecycle=False, ui=False)
    with serving_in_thread(app) as url:
        r = httpx.get(f"{url}/ui")
        assert r.status_code == 404 and r.json() == {"error": "Not found: /ui"}
        assert httpx.get(f"{url}/v1/models/{MODEL}").status_code == 200


def test_inbrowser_opens_the_page_once_the_port_listens(monkeypatch):
    import socket
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        thread = ui_page.open_in_browser_when_up("0.0.0.0", port, timeout_seconds=30)
        thread.join(0.5)
        assert thread.is_alive() and not opened  # nothing listens yet
        sock.listen()
        thread.join(30)
    assert opened == [f"http://127.0.0.1:{port}/ui"]


def test_paint_complete_compare_undo_download(server, driver, photo_path):
    _page(driver, server)
    state = _state(driver)
    assert state["modelOk"], state
    version = max(server.manager.available()[MODEL])
    assert f"{MODEL} version {version}" in driver.find_element("id", "model-info").text
    photo = np.asarray(Image.open(photo_path).convert("RGB"))
    _open(driver, photo_path)
    _wait(driver, "glcicUI.state().hasImage")
    assert (_state(driver)["width"], _state(driver)["height"]) == photo.shape[1::-1]
    overlay = driver.find_element("id", "overlay")

    _stroke(driver, overlay, CUP_STROKE)
    painted = driver.execute_script("return glcicUI.maskPixels();")
    assert painted > 500, painted
    _ctrl(driver, "z")
    assert driver.execute_script("return glcicUI.maskPixels();") == 0
    assert _state(driver)["redo"] == 1
    driver.find_element("id", "redo").click()
    assert driver.execute_script("return glcicUI.maskPixels();") == painted

    # Record the busy state as the page shows it, then complete with the keyboard shortcut.
    driver.execute_script("""
        window.busySeen = [];
        new MutationObserver(() => busySeen.push([document.body.classList.contains('busy'),
            getComputedStyle(document.getElementById('busy')).display,
            document.getElementById('complete').disabled]))
          .observe(document.body, {attributes: true, attributeFilter: ['class']});""")
    from selenium.webdriver.common.keys import Keys

    _keys(driver, Keys.ENTER)
    _wait(driver, "glcicUI.state().completions === 1 && !glcicUI.state().busy")
    assert [True, "flex", True] in driver.execute_script("return busySeen;")
    assert _state(driver)["message"] == ""
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver.save_screenshot(os.path.join(ARTIFACTS, "ui_completion.png"))

    sent = driver.execute_script("return glcicUI.lastRequest();")
    np.testing.assert_array_equal(_decode(sent["image"]), photo)  # the photo, exactly
    mask = _decode(sent["mask"], "L")
    assert set(np.unique(mask)) <= {0, 255}
    hole = mask > 0
    assert hole.sum() == painted
    h, w = hole.shape
    assert hole[h // 2, w // 2] and not hole[:10].any() and not hole[-10:].any()
    result = _decode(driver.execute_script("return glcicUI.result();"))
    assert result.shape == photo.shape
    np.testing.assert_array_equal(result[~hole], photo[~hole])
    change = np.abs(result[hole].astype(int) - photo[hole]).mean()
    assert change > 3, change

    # The page shows what serving_default returns for the same bytes.
    servable = server.manager.servable(MODEL)
    direct = servable.run("serving_default", {
        "image_bytes": np.array([base64.b64decode(sent["image"])], dtype=object),
        "mask_bytes": np.array([base64.b64decode(sent["mask"])], dtype=object)})
    direct = decode(direct["completed_bytes"][0])
    assert np.abs(direct.astype(int) - result).max() <= 1
    np.testing.assert_array_equal(_canvas(driver, "image"), result)

    # Before / after.
    _keys(driver, "c")
    assert _state(driver)["showing"] == "before"
    np.testing.assert_array_equal(_canvas(driver, "image"), photo)
    driver.find_element("id", "compare").click()
    assert _state(driver)["showing"] == "after"
    np.testing.assert_array_equal(_canvas(driver, "image"), result)

    # Download: the server's PNG bytes, under the photo's name.
    link = driver.find_element("id", "download")
    assert link.get_attribute("download") == "coffee_completed.png"
    assert link.get_attribute("aria-disabled") == "false"
    downloaded = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then((r) => r.blob()).then((b) => {
          const f = new FileReader();
          f.onload = () => done(String(f.result).split(',')[1]);
          f.readAsDataURL(b);
        }).catch((e) => done(`error: ${e}`));""", link.get_attribute("href"))
    assert downloaded == driver.execute_script("return glcicUI.result();")

    # Undo the completion: the photo and its painted mask come back.
    _ctrl(driver, "z")
    np.testing.assert_array_equal(_canvas(driver, "image"), photo)
    assert driver.execute_script("return glcicUI.maskPixels();") == painted
    assert link.get_attribute("aria-disabled") == "true"
    _ctrl(driver, "z", shift=True)
    np.testing.assert_array_equal(_canvas(driver, "image"), result)


def test_touch_pen_eraser_clear_and_brush_size(server, driver, photo_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.keys import Keys

    _page(driver, server)
    _open(driver, photo_path)
    _wait(driver, "glcicUI.state().hasImage")
    overlay = driver.find_element("id", "overlay")
    _stroke(driver, overlay, [(-80, -60), (-40, -60), (0, -60)], pointer="touch")
    touch = driver.execute_script("return glcicUI.maskPixels();")
    assert touch > 300, touch
    _stroke(driver, overlay, [(0, 60), (40, 60), (80, 60)], pointer="pen")
    both = driver.execute_script("return glcicUI.maskPixels();")
    assert both > touch + 300, (touch, both)
    assert _state(driver)["history"] == ["stroke", "stroke"]

    # Alt + wheel and the bracket keys change the brush; the slider shows it.
    size = _state(driver)["brush"]
    ActionChains(driver).key_down(Keys.ALT).scroll_from_origin(
        ScrollOrigin.from_element(overlay), 0, -100).key_up(Keys.ALT).perform()
    bigger = _state(driver)["brush"]
    assert bigger > size, (size, bigger)
    _keys(driver, "[")
    assert _state(driver)["brush"] < bigger
    _keys(driver, "]", "]", "]")
    assert _state(driver)["brush"] > bigger
    assert driver.find_element("id", "size").get_attribute("value") == str(
        _state(driver)["brush"])

    # The eraser, with a big brush, takes the touch stroke away and leaves the pen's.
    _keys(driver, "e")
    assert _state(driver)["tool"] == "eraser"
    _stroke(driver, overlay, [(-100, -60), (-40, -60), (20, -60)])
    erased = driver.execute_script("return glcicUI.maskPixels();")
    assert 0 < erased < both - touch + 50, (erased, both, touch)
    driver.find_element("id", "clear").click()
    assert driver.execute_script("return glcicUI.maskPixels();") == 0
    _ctrl(driver, "z")
    assert driver.execute_script("return glcicUI.maskPixels();") == erased


def test_errors_are_shown_in_words(server, driver, photo_path, tmp_path):
    from selenium.webdriver.common.keys import Keys

    _page(driver, server)
    # A file that is not an image.
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    _open(driver, str(bad))
    _wait(driver, "glcicUI.state().message")
    message = driver.find_element("id", "message")
    assert message.is_displayed()
    assert 'Could not open "notes.png"' in message.text and "PNG, JPEG" in message.text
    assert not _state(driver)["hasImage"]

    # Completing with nothing painted says so and sends nothing.
    _open(driver, photo_path)
    _wait(driver, "glcicUI.state().hasImage && !glcicUI.state().message")
    _keys(driver, Keys.ENTER)
    assert "Nothing to complete" in _state(driver)["message"]
    assert driver.execute_script("return glcicUI.lastRequest();") is None

    # The server's own error for a request it refuses (here: a body over --max_body_bytes).
    big = tmp_path / "noise.png"
    big.write_bytes(png_bytes(noise(640, 640)))
    _open(driver, str(big))
    _wait(driver, "glcicUI.state().width === 640")
    _stroke(driver, driver.find_element("id", "overlay"), [(-20, 0), (20, 0)])
    _keys(driver, Keys.ENTER)
    _wait(driver, "glcicUI.state().message && !glcicUI.state().busy")
    text = _state(driver)["message"]
    assert "413" in text and "exceeds the limit" in text and "--max_body_bytes" in text, text
    assert _state(driver)["completions"] == 0

    # An unknown model: the server's NOT_FOUND, and Complete is disabled.
    _page(driver, server, "?model=nope")
    _wait(driver, "glcicUI.state().message")
    text = _state(driver)["message"]
    assert "404" in text and "nope" in text, text
    assert not driver.find_element("id", "complete").is_enabled()
