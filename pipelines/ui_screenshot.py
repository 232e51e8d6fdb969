"""Screenshots of the completion page at work (the README's pictures), made in a real browser.

Serves a model with the embedded server (in this process), opens /ui in headless Chromium,
opens a photo, paints a stroke with real pointer events, saves a screenshot, presses Complete,
and saves a second one. Needs `selenium` and Chromium with its driver (Debian: `apt-get install
chromium chromium-driver`).

Usage:
  python pipelines/ui_screenshot.py                       # shipped model, scikit-image's coffee
  python pipelines/ui_screenshot.py --image photo.jpg --stroke 0.2,0.5 0.8,0.5 --out-dir shots
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from glcic_tf import console

DEFAULT_STROKE = ("0.70,0.12", "0.67,0.30", "0.64,0.48", "0.61,0.62", "0.58,0.70", "0.56,0.74",
                  "0.60,0.76")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="",
                   help="TF Serving base path of the model (default: the shipped model)")
    p.add_argument("--image", default="",
                   help="photo to complete (default: scikit-image's coffee, 160 px high)")
    p.add_argument("--stroke", nargs="+", default=list(DEFAULT_STROKE), metavar="X,Y",
                   help="the stroke's points as fractions of the image's width and height "
                        "(default: over the spoon of the coffee photo)")
    p.add_argument("--brush", type=int, default=60, help="brush size in screen px")
    p.add_argument("--out-dir", default="docs",
                   help="where ui_painted.png and ui_completed.png go (default: %(default)s)")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    try:
        args.stroke = [tuple(float(v) for v in point.split(",")) for point in args.stroke]
    except ValueError:
        p.error(f"--stroke points are X,Y fractions like 0.2,0.5; got {args.stroke}")
    if any(len(pt) != 2 or not all(0 <= v <= 1 for v in pt) for pt in args.stroke):
        p.error(f"--stroke points are X,Y fractions in [0, 1]; got {args.stroke}")
    return args


def _default_photo(folder: str) -> str:
    import cv2
    import skimage.data
    from PIL import Image

    image = skimage.data.coffee()
    scale = 160 / min(image.shape[:2])
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    path = os.path.join(folder, "coffee.png")
    Image.fromarray(image).save(path)
    return path


def main(args: argparse.Namespace) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.support.ui import WebDriverWait

    from glcic_tf.inference import shipped
    from glcic_tf.serving import page as ui_page
    from glcic_tf.serving.app import create_app
    from glcic_tf.serving.manager import ModelManager
    from glcic_tf.serving.model_config import ModelConfig
    from glcic_tf.serving.server import serving_in_thread

    base_path = os.path.abspath(args.model) if args.model else shipped.model_path()
    manager = ModelManager([ModelConfig("glcic", base_path)], poll_wait_seconds=0)
    os.makedirs(args.out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            serving_in_thread(create_app(manager)) as url:
        image = os.path.abspath(args.image) if args.image else _default_photo(tmp)
        driver = ui_page.headless_chromium(1280, 700)
        try:
            wait = WebDriverWait(driver, 120, poll_frequency=0.05)
            driver.get(f"{url}/ui?model=glcic")
            wait.until(lambda d: d.execute_script(
                "return window.glcicUI && (glcicUI.state().modelOk || glcicUI.state().message)"))
            if not driver.execute_script("return glcicUI.state().modelOk"):
                sys.exit(f"error: {driver.execute_script('return glcicUI.state().message')}")
            driver.find_element("id", "file").send_keys(image)
            wait.until(lambda d: d.execute_script("return glcicUI.state().hasImage"))
            driver.execute_script(
                "const s = document.getElementById('size'); s.value = arguments[0];"
                "s.dispatchEvent(new Event('input'));", args.brush)
            overlay = driver.find_element("id", "overlay")
            w, h = overlay.size["width"], overlay.size["height"]
            points = [(round((x - 0.5) * w), round((y - 0.5) * h)) for x, y in args.stroke]
            actions = ActionBuilder(driver, duration=30)
            actions.pointer_action.move_to(overlay, *points[0]).pointer_down()
            for point in points[1:]:
                actions.pointer_action.move_to(overlay, *point)
            actions.pointer_action.pointer_up()
            actions.perform()
            painted = os.path.join(args.out_dir, "ui_painted.png")
            driver.save_screenshot(painted)
            driver.find_element("id", "complete").click()
            wait.until(lambda d: d.execute_script(
                "const s = glcicUI.state(); return !s.busy && (s.completions || s.message)"))
            message = driver.execute_script("return glcicUI.state().message")
            if message:
                sys.exit(f"error: {message}")
            completed = os.path.join(args.out_dir, "ui_completed.png")
            driver.save_screenshot(completed)
        finally:
            driver.quit()
    print(f"wrote {painted} and {completed}")


if __name__ == "__main__":
    main(console.parse_quietly(parse_args))
