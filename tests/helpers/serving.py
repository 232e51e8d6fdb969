"""Requests and checks shared by the serving tests (the fixtures are in tests/serving/conftest.py).

By default the served model is a tiny export (`tiny_exports`' float32 version, untrained He-normal
weights: its fill is far from the noise test images). With `TFSERVING_REST_URL` set, the REST
tests run against that server instead (a real `tensorflow/serving` serving a glcic export under
`MODEL_NAME`, default glcic; `TFSERVING_MODEL_DIR`, the version directory it serves, turns the
in-process comparison on); the tests that need the embedded server are skipped then.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil

import httpx
import numpy as np
import pytest

from helpers.images import decode, noise, png_bytes

REAL_URL = os.environ.get("TFSERVING_REST_URL", "").rstrip("/")
MODEL = os.environ.get("MODEL_NAME", "glcic") if REAL_URL else "glcic"
MAX_BODY = 4 * 1024 * 1024  # --max_body_bytes of the embedded test server
STARTUP_TIMEOUT_S = 240  # TF import + model load on a busy 2-core machine
RELOAD_TIMEOUT_S = 120
embedded_only = pytest.mark.skipif(bool(REAL_URL),
                                   reason="needs the embedded server (TFSERVING_REST_URL set)")


@dataclasses.dataclass
class Server:
    """A server under test: its URL and, for the embedded one, what it serves and its log."""

    url: str
    base_path: str | None = None
    version_dir: str | None = None
    log_path: str | None = None

    def model_url(self, suffix: str = "", model: str = MODEL) -> str:
        return f"{self.url}/v1/models/{model}{suffix}"

    def log_tail(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]


def copy_version(source: str, base_path: str, version: int) -> str:
    """Copies the version directory `source` into `base_path` as `version` (a copy under a
    temporary name, then one rename: a polling server never sees half a version)."""
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


def available_versions(status: dict) -> list[int]:
    return [int(s["version"]) for s in status["model_version_status"]
            if s["state"] == "AVAILABLE"]


def current_version(http, server) -> int:
    return max(available_versions(http.get(server.model_url()).json()))


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def make_mask(h: int = 32, w: int = 32) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4:h // 2, w // 4:w // 2] = 255
    return mask


def instance(image: np.ndarray, mask: np.ndarray) -> dict:
    """A `serving_default` instance: the image and the mask as {"b64": ...} PNGs."""
    return {"image_bytes": b64(png_bytes(image)), "mask_bytes": b64(png_bytes(mask))}


def good_pair(h=32, w=32):
    """A valid `serving_default` instance: noise and its mask."""
    return instance(noise(h, w), make_mask(h, w))


def assert_error(response: httpx.Response, status: int, match: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text[:1000])
    payload = response.json()
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
    if match is not None:
        assert match.lower() in payload["error"].lower(), payload["error"][:1000]
    return payload["error"]


def check_completed_png(data: bytes, image: np.ndarray, mask: np.ndarray, local) -> None:
    """The served PNG: the image outside the hole, something else inside it, and what
    `serving_default` gives in this process for the same bytes (within 1 level of uint8)."""
    out = decode(data)
    assert out.shape == image.shape
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], image[keep])  # known pixels are untouched
    # A server that echoed its input would pass the line above; the tiny network's fill is
    # far from the noise images used here.
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 10
    if local is None:
        return
    import tensorflow as tf

    expected = local.signatures["serving_default"](
        image_bytes=tf.constant([png_bytes(image)]), mask_bytes=tf.constant([png_bytes(mask)]))
    expected = decode(expected["completed_bytes"].numpy()[0]).astype(int)
    assert np.abs(out.astype(int) - expected).max() <= 1


def complete_locally(local, image, mask) -> np.ndarray | None:
    """The `complete` signature run in this process (None without a local SavedModel)."""
    if local is None:
        return None
    import tensorflow as tf

    return local.signatures["complete"](image=tf.constant(image),
                                        mask=tf.constant(mask))["completed"].numpy()
