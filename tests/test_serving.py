"""Contract tests of the serving API: TF Serving's REST API, as the exports are served.

By default the module exports a tiny completion network (width 1/16, `demo` preset) to a temp
base path and starts the embedded server (`python serving/server.py`) on a free loopback port,
once for the whole module. With `TFSERVING_REST_URL` set, the same REST tests run against that
server instead (a real `tensorflow/serving` serving a glcic export under `MODEL_NAME`, default
glcic); the tests that need the embedded server (413 body limit, hot reload) are skipped then:

  TFSERVING_REST_URL=http://localhost:8501 MODEL_NAME=glcic pytest tests/test_serving.py

The unit tests at the end (JSON <-> tensors, model manager, config file, client request
builders) need no server. Loopback only; every wait and loop is bounded.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from glcic_tf import serving_app, serving_client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_URL = os.environ.get("TFSERVING_REST_URL", "").rstrip("/")
MODEL = os.environ.get("MODEL_NAME", "glcic") if REAL_URL else "glcic"
MAX_BODY = 4 * 1024 * 1024  # --max_body_bytes of the embedded test server
STARTUP_TIMEOUT_S = 240  # TF import + model load on a busy 2-core machine
RELOAD_TIMEOUT_S = 120
embedded_only = pytest.mark.skipif(bool(REAL_URL),
                                   reason="needs the embedded server (TFSERVING_REST_URL set)")


# --------------------------------------------------------------------------------------------
# Fixtures: a tiny export and the server
# --------------------------------------------------------------------------------------------

def _standin_export(base_path: str, version: int) -> str:
    """A SavedModel with exactly the export contract's signatures, for when glcic_tf.export is
    missing: completed = image * (1 - mask) + 0.5 * mask."""
    import tensorflow as tf

    class Standin(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([None, None, None, 1], tf.float32, name="mask")])
        def complete(self, image, mask):
            return {"completed": image * (1.0 - mask) + 0.5 * mask}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                      tf.TensorSpec([None], tf.string, name="mask_bytes")])
        def serving_default(self, image_bytes, mask_bytes):
            def one(args):
                image = tf.io.decode_image(args[0], channels=3, expand_animations=False)
                mask = tf.io.decode_image(args[1], channels=1, expand_animations=False)
                check = tf.debugging.assert_equal(
                    tf.shape(mask)[:2], tf.shape(image)[:2],
                    message="mask_bytes: mask size differs from image_bytes size")
                with tf.control_dependencies([check]):
                    hole = tf.cast(mask > 50, tf.float32)
                image = tf.image.convert_image_dtype(image, tf.float32)
                out = image * (1.0 - hole) + 0.5 * hole
                return tf.io.encode_png(tf.image.convert_image_dtype(out, tf.uint8,
                                                                     saturate=True))

            return {"completed_bytes": tf.map_fn(one, (image_bytes, mask_bytes),
                                                 fn_output_signature=tf.string)}

    module = Standin()
    path = os.path.join(base_path, str(version))
    staging = os.path.join(base_path, f".staging-{version}")  # renamed in: never half-written
    tf.saved_model.save(module, staging, signatures={
        "serving_default": module.serving_default.get_concrete_function(),
        "complete": module.complete.get_concrete_function()})
    os.rename(staging, path)
    return path


def export_tiny(base_path: str, version: int = 1) -> str:
    """Exports a tiny model to base_path/VERSION; returns the version directory.

    Uses glcic_tf.export when it provides export_saved_model, else the stand-in above.
    """
    try:
        from glcic_tf.export import export_saved_model
    except ImportError:
        return _standin_export(base_path, version)
    from glcic_tf import models
    from glcic_tf.config import get_preset

    config = get_preset("tiny")
    model = models.completion_network(width=1 / 16, config=config.model)
    return export_saved_model(model, config, base_path, version=version)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
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


def _available_versions(status: dict) -> list[int]:
    return [int(s["version"]) for s in status["model_version_status"]
            if s["state"] == "AVAILABLE"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if REAL_URL:
        yield Server(REAL_URL)
        return
    root = tmp_path_factory.mktemp("serving")
    base_path = str(root / "models" / "glcic")
    port = _free_port()
    log_path = str(root / "server.log")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.join(REPO, "serving", "server.py"),
           "--rest_api_port", str(port), "--rest_api_host", "127.0.0.1",
           "--model_name", "glcic", "--model_base_path", base_path,
           "--max_body_bytes", str(MAX_BODY), "--file_system_poll_wait_seconds", "0.2",
           "--num_threads", "4", "--log_level", "info"]
    # The server starts on the empty base path while the model is exported here (both import
    # TensorFlow; overlapping them halves the set-up time); it picks version 1 up by polling.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server(f"http://127.0.0.1:{port}", base_path, None, log_path)
    try:
        srv.version_dir = export_tiny(base_path, version=1)
        assert os.path.dirname(srv.version_dir) == base_path
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{srv.log_tail()}")
            try:
                r = httpx.get(srv.model_url(), timeout=5)
                if r.status_code == 200 and _available_versions(r.json()):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {STARTUP_TIMEOUT_S} s:\n{srv.log_tail()}")
            time.sleep(0.25)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(timeout=120) as client:
        yield client


# --------------------------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------------------------

def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def unpng(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def make_image(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_mask(h: int = 32, w: int = 32) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4:h // 2, w // 4:w // 2] = 255
    return mask


def assert_error(response: httpx.Response, status: int, match: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text[:1000])
    payload = response.json()
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
    if match is not None:
        assert match.lower() in payload["error"].lower(), payload["error"][:1000]
    return payload["error"]


def current_version(http, server) -> int:
    return max(_available_versions(http.get(server.model_url()).json()))


# --------------------------------------------------------------------------------------------
# Status and metadata
# --------------------------------------------------------------------------------------------

def test_status(http, server):
    r = http.get(server.model_url())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    statuses = r.json()["model_version_status"]
    available = [s for s in statuses if s["state"] == "AVAILABLE"]
    assert available, statuses
    for s in available:
        assert s["version"].isdigit()
        assert s["status"] == {"error_code": "OK", "error_message": ""}

    version = current_version(http, server)
    one = http.get(server.model_url(f"/versions/{version}")).json()
    assert one["model_version_status"] == [
        {"version": str(version), "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]


def test_metadata(http, server):
    version = current_version(http, server)
    for suffix in ("/metadata", f"/versions/{version}/metadata"):
        r = http.get(server.model_url(suffix))
        assert r.status_code == 200, r.text
        meta = r.json()
        assert meta["model_spec"]["name"] == MODEL
        assert meta["model_spec"]["version"] == str(version)
        sigs = meta["metadata"]["signature_def"]["signature_def"]
        assert {"serving_default", "complete"} <= set(sigs)

        default = sigs["serving_default"]
        assert default["method_name"] == "tensorflow/serving/predict"
        assert set(default["inputs"]) == {"image_bytes", "mask_bytes"}
        assert set(default["outputs"]) == {"completed_bytes"}
        for info in (*default["inputs"].values(), *default["outputs"].values()):
            assert info["dtype"] == "DT_STRING"
            assert [d["size"] for d in info["tensor_shape"]["dim"]] == ["-1"]

        complete = sigs["complete"]
        assert set(complete["inputs"]) == {"image", "mask"}
        assert set(complete["outputs"]) == {"completed"}
        dims = {k: [d["size"] for d in v["tensor_shape"]["dim"]]
                for k, v in {**complete["inputs"], **complete["outputs"]}.items()}
        assert dims == {"image": ["-1", "-1", "-1", "3"], "mask": ["-1", "-1", "-1", "1"],
                        "completed": ["-1", "-1", "-1", "3"]}
        assert all(v["dtype"] == "DT_FLOAT"
                   for v in {**complete["inputs"], **complete["outputs"]}.values())


# --------------------------------------------------------------------------------------------
# Predict: both signatures, both formats
# --------------------------------------------------------------------------------------------

def _check_completed_png(data: bytes, image: np.ndarray, mask: np.ndarray) -> None:
    out = unpng(data)
    assert out.shape == image.shape
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], image[keep])  # known pixels are untouched


def test_predict_bytes_rows(http, server):
    images = [make_image(32, 32, seed=1), make_image(48, 32, seed=2)]  # sizes may differ
    masks = [make_mask(32, 32), make_mask(48, 32)]
    body = {"instances": [{"image_bytes": b64(png(i)), "mask_bytes": b64(png(m))}
                          for i, m in zip(images, masks)]}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    predictions = r.json()["predictions"]
    # One output: each prediction is the value itself, bytes as {"b64": ...}.
    assert len(predictions) == 2 and all(set(p) == {"b64"} for p in predictions)
    for p, image, mask in zip(predictions, images, masks):
        _check_completed_png(base64.b64decode(p["b64"]), image, mask)


def test_predict_bytes_columns(http, server):
    image, mask = make_image(seed=3), make_mask()
    body = {"signature_name": "serving_default",
            "inputs": {"image_bytes": [b64(png(image))], "mask_bytes": [b64(png(mask))]}}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    outputs = r.json()["outputs"]
    assert isinstance(outputs, list) and len(outputs) == 1
    _check_completed_png(base64.b64decode(outputs[0]["b64"]), image, mask)


def test_predict_versioned_path(http, server):
    version = current_version(http, server)
    image, mask = make_image(seed=4), make_mask()
    body = {"instances": [{"image_bytes": b64(png(image)), "mask_bytes": b64(png(mask))}]}
    r = http.post(server.model_url(f"/versions/{version}:predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    _check_completed_png(base64.b64decode(r.json()["predictions"][0]["b64"]), image, mask)


def test_predict_bytes_is_the_post_processed_signature_output(http, server):
    """The REST answer is serving_default run in-process on the same SavedModel: the
    in-graph post-processed picture, which differs from the raw network composite."""
    if server.version_dir is None:
        pytest.skip("a real TF Serving at TFSERVING_REST_URL: no local SavedModel to compare")
    image, mask = make_image(40, 48, seed=7), make_mask(40, 48)
    body = {"instances": [{"image_bytes": b64(png(image)), "mask_bytes": b64(png(mask))}]}
    r = http.post(server.model_url("/versions/1:predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    served = unpng(base64.b64decode(r.json()["predictions"][0]["b64"])).astype(int)
    import tensorflow as tf

    loaded = tf.saved_model.load(server.version_dir)
    local = loaded.signatures["serving_default"](
        image_bytes=tf.constant([png(image)]), mask_bytes=tf.constant([png(mask)]))
    local = unpng(local["completed_bytes"].numpy()[0]).astype(int)
    assert np.abs(served - local).max() <= 1
    raw = loaded.signatures["complete"](
        image=tf.constant(image[None] / 255.0, tf.float32),
        mask=tf.constant(mask[None, ..., None] / 255.0, tf.float32))["completed"].numpy()[0]
    hole = mask > 0
    assert np.abs(served - np.round(raw * 255))[hole].mean() > 1.0


def test_predict_complete_rows_and_columns(http, server):
    rng = np.random.default_rng(5)
    image = rng.random((2, 32, 32, 3), dtype=np.float32)
    mask = np.zeros((2, 32, 32, 1), np.float32)
    mask[:, 8:20, 4:16] = 1.0
    rows = http.post(server.model_url(":predict"), json={
        "signature_name": "complete",
        "instances": [{"image": image[i].tolist(), "mask": mask[i].tolist()} for i in range(2)]})
    assert rows.status_code == 200, rows.text[:1000]
    predictions = np.asarray(rows.json()["predictions"], np.float32)
    columns = http.post(server.model_url(":predict"), json={
        "signature_name": "complete", "inputs": {"image": image.tolist(), "mask": mask.tolist()}})
    assert columns.status_code == 200, columns.text[:1000]
    outputs = np.asarray(columns.json()["outputs"], np.float32)

    assert predictions.shape == outputs.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(predictions, outputs, atol=1e-6)
    keep = np.broadcast_to(mask == 0, image.shape)
    np.testing.assert_allclose(outputs[keep], image[keep], atol=1e-6)
    assert np.all((outputs >= 0) & (outputs <= 1))


def test_rest_client_round_trip(server):
    image, mask = make_image(seed=6), make_mask()
    with serving_client.RestClient(server.url, MODEL, timeout=120) as client:
        assert _available_versions(client.status())
        sigs = client.metadata()["metadata"]["signature_def"]["signature_def"]
        assert "complete" in sigs
        for fmt in serving_client.FORMATS:
            _check_completed_png(client.complete(png(image), png(mask), format=fmt), image,
                                 mask)
        out = client.complete_arrays(image[None] / 255.0, (mask[None, ..., None] > 0) * 1.0)
        assert out.shape == (1, 32, 32, 3)
        with pytest.raises(serving_client.ServingError, match="400"):
            client.complete(b"not an image", png(mask))


# --------------------------------------------------------------------------------------------
# Bad requests: 4xx with {"error": ...}, and the server keeps serving
# --------------------------------------------------------------------------------------------

def _good_pair(h=32, w=32):
    return {"image_bytes": b64(png(make_image(h, w))), "mask_bytes": b64(png(make_mask(h, w)))}


BAD_REQUESTS = [
    # (id, path suffix, body (bytes or JSON), status, substring of the error)
    ("malformed_json", ":predict", b'{"instances": [', 400, "JSON Parse error"),
    ("empty_body", ":predict", b"", 400, "JSON Parse error"),
    ("not_an_object", ":predict", b"[1, 2]", 400, None),
    ("signature_not_string", ":predict", {"signature_name": 3, "instances": [1]}, 400,
     "signature_name"),
    ("unknown_signature", ":predict", {"signature_name": "nope", "instances": [1]}, 400,
     "nope"),
    ("no_inputs_key", ":predict", {"signature_name": "serving_default"}, 400, "instances"),
    ("both_keys", ":predict", {"instances": [1], "inputs": [1]}, 400, "instances"),
    ("plain_list_for_two_inputs", ":predict", {"instances": ["a", "b"]}, 400, "plain list"),
    ("missing_input_key", ":predict",
     {"instances": [{"image_bytes": b64(png(make_image()))}]}, 400, "mask_bytes"),
    ("plain_string_not_image", ":predict",
     {"instances": [{"image_bytes": "definitely not an image", "mask_bytes": "nor a mask"}]},
     400, None),
    ("b64_not_image", ":predict",
     {"instances": [{"image_bytes": b64(b"\x00garbage" * 10), "mask_bytes": b64(b"x")}]},
     400, None),
    ("bad_base64", ":predict",
     {"instances": [{"image_bytes": {"b64": "%%% not base64 %%%"}, "mask_bytes": b64(b"x")}]},
     400, "base64"),
    ("mask_size_mismatch", ":predict",
     {"instances": [{"image_bytes": b64(png(make_image(32, 32))),
                     "mask_bytes": b64(png(make_mask(16, 32)))}]}, 400, "mask"),
    ("wrong_dtype_rows", ":predict",
     {"signature_name": "complete",
      "instances": [{"image": "abc", "mask": np.zeros((8, 8, 1)).tolist()}]}, 400, "image"),
    ("wrong_dtype_columns", ":predict",
     {"signature_name": "complete",
      "inputs": {"image": [[[["x", 0.0, 0.0]]]], "mask": [[[[0.0]]]]}}, 400, "float"),
    ("bool_for_float", ":predict",
     {"signature_name": "complete",
      "inputs": {"image": [[[[True, 0.0, 0.0]]]], "mask": [[[[0.0]]]]}}, 400, "float"),
    ("ragged_instances", ":predict",
     {"signature_name": "complete",
      "instances": [{"image": np.zeros((8, 8, 3)).tolist(), "mask": np.zeros((8, 8, 1)).tolist()},
                    {"image": np.zeros((4, 8, 3)).tolist(), "mask": np.zeros((4, 8, 1)).tolist()}]},
     400, "expecting"),
    ("ragged_tensor", ":predict",
     {"signature_name": "complete",
      "inputs": {"image": [[[[0.0, 0.0, 0.0]], [[0.0, 0.0]]]], "mask": [[[[0.0]]]]}}, 400, None),
    ("wrong_rank", ":predict",
     {"signature_name": "complete", "inputs": {"image": [[0.5, 0.5, 0.5]], "mask": [[1.0]]}},
     400, None),
    ("image_mask_size_mismatch_float", ":predict",
     {"signature_name": "complete", "inputs": {"image": np.zeros((1, 8, 8, 3)).tolist(),
                                               "mask": np.zeros((1, 4, 8, 1)).tolist()}},
     400, None),
    ("unknown_model_predict", "MODEL=nope:predict", {"instances": [_good_pair()]}, 404,
     "nope"),
    ("unknown_version_predict", "/versions/987654:predict", {"instances": [_good_pair()]}, 404,
     "987654"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_predict_requests(http, server, case):
    _, suffix, body, status, match = case
    if suffix.startswith("MODEL="):
        model, suffix = suffix[len("MODEL="):].split(":", 1)
        url = server.model_url(":" + suffix, model=model)
    else:
        url = server.model_url(suffix)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = http.post(url, content=content, headers={"Content-Type": "application/json"})
    assert_error(r, status, match)
    assert http.get(server.model_url()).status_code == 200  # still up


@pytest.mark.parametrize("suffix,model,status", [
    ("", "nope", 404),
    ("/metadata", "nope", 404),
    ("/versions/987654", MODEL, 404),
    ("/versions/987654/metadata", MODEL, 404),
    (":predict", MODEL, 400),  # GET on the predict URL is malformed
])
def test_bad_get_requests(http, server, suffix, model, status):
    assert_error(http.get(server.model_url(suffix, model=model)), status)


@embedded_only
def test_oversized_body_gets_413(http, server):
    big = {"instances": [{"image_bytes": b64(b"\x00" * MAX_BODY), "mask_bytes": b64(b"")}]}
    content = json.dumps(big).encode()
    assert len(content) > MAX_BODY
    # Declared by Content-Length.
    assert_error(http.post(server.model_url(":predict"), content=content), 413, "exceeds")

    # Streamed without Content-Length (chunked): counted while reading.
    def chunks():
        for i in range(0, len(content), 65536):
            yield content[i:i + 65536]

    assert_error(http.post(server.model_url(":predict"), content=chunks()), 413, "exceeds")
    ok = http.post(server.model_url(":predict"), json={"instances": [_good_pair()]})
    assert ok.status_code == 200, ok.text[:500]


def test_good_request_after_errors(http, server):
    r = http.post(server.model_url(":predict"), json={"instances": [_good_pair()]})
    assert r.status_code == 200, r.text[:500]


# --------------------------------------------------------------------------------------------
# Concurrency: status answers while predictions run
# --------------------------------------------------------------------------------------------

def test_status_answers_while_predicting(server):
    # A slow request: several large (but compressible, so small on the wire) images.
    h, w = 1024, 1024
    ramp = np.linspace(0, 255, w, dtype=np.uint8)
    image = np.stack([np.tile(ramp, (h, 1))] * 3, axis=-1)
    pair = {"image_bytes": b64(png(image)), "mask_bytes": b64(png(make_mask(h, w)))}
    body = json.dumps({"instances": [pair] * 6}).encode()
    sending = threading.Event()

    def slow_predict():
        with httpx.Client(timeout=300) as c:
            sending.set()
            return c.post(server.model_url(":predict"), content=body)

    answered_during_predict = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(timeout=60) as c:
        future = pool.submit(slow_predict)
        assert sending.wait(timeout=60)
        for _ in range(10_000):  # bounded; ends as soon as the prediction is done
            r = c.get(server.model_url())
            assert r.status_code == 200
            if future.done():
                break
            answered_during_predict += 1
            time.sleep(0.01)  # leave the cores to the prediction
        response = future.result(timeout=300)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["predictions"]) == 6
    # A server running predictions on its event loop answers status requests only before the
    # prediction arrives and after it ends: a handful. Off the loop, they keep coming.
    print("answered_during_predict", answered_during_predict)
    assert answered_during_predict >= 20, answered_during_predict


# --------------------------------------------------------------------------------------------
# Hot reload (embedded server; runs last: it changes the served version)
# --------------------------------------------------------------------------------------------

def _status(http, server) -> dict[int, str]:
    return {int(s["version"]): s["state"]
            for s in http.get(server.model_url()).json()["model_version_status"]}


@embedded_only
def test_hot_reload_new_version(http, server):
    base = server.base_path
    old = current_version(http, server)
    new = old + 1
    # A version being copied (no saved_model.pb yet) must be ignored, even though it is newest.
    os.makedirs(os.path.join(base, str(new + 1), "variables"))
    # Copy the new version next to the base path's versions, then rename it in atomically.
    staging = os.path.join(base, f".staging-{new}")
    shutil.copytree(server.version_dir, staging)
    os.rename(staging, os.path.join(base, str(new)))

    pair = _good_pair()
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while True:
        # The old version keeps answering while the new one loads.
        r = http.post(server.model_url(":predict"), json={"instances": [pair]})
        assert r.status_code == 200, r.text[:500]
        states = _status(http, server)
        if states.get(new) == "AVAILABLE" and states.get(old) == "END":
            break
        assert time.monotonic() < deadline, (states, server.log_tail())
        time.sleep(0.2)
    assert new + 1 not in states
    assert http.get(server.model_url("/metadata")).json()["model_spec"]["version"] == str(new)
    assert_error(http.post(server.model_url(f"/versions/{old}:predict"),
                           json={"instances": [pair]}), 404)


# --------------------------------------------------------------------------------------------
# Unit tests, no server: JSON <-> tensors
# --------------------------------------------------------------------------------------------

FLOAT = serving_app.TensorSpecInfo(1, "float", (-1, -1, -1, 3))
STRING = serving_app.TensorSpecInfo(7, "string", (-1,))


def test_json_to_array_shapes_and_errors():
    arr = serving_app.json_to_array([[1, 2.5], [3, 4]], FLOAT)
    assert arr.dtype == np.float32 and arr.shape == (2, 2)
    np.testing.assert_array_equal(arr, [[1, 2.5], [3, 4]])
    strings = serving_app.json_to_array([{"b64": "aGk="}, "yo"], STRING)
    assert strings.tolist() == [b"hi", b"yo"]
    with pytest.raises(serving_app.ServingError, match="unexpected size: 1 at level: 1"):
        serving_app.json_to_array([[1, 2], [3]], FLOAT)
    with pytest.raises(serving_app.ServingError, match="incorrect level"):
        serving_app.json_to_array([[1, 2], 3], FLOAT)
    with pytest.raises(serving_app.ServingError, match='"x" Type: String is not of expected '
                                                       "type: float"):
        serving_app.json_to_array([1.0, "x"], FLOAT)
    with pytest.raises(serving_app.ServingError, match="Type: True is not of expected type"):
        serving_app.json_to_array([1.0, True], FLOAT)
    with pytest.raises(serving_app.ServingError, match="without loss of precision"):
        serving_app.json_to_array([1e39], FLOAT)
    with pytest.raises(serving_app.ServingError, match="Unable to base64 decode"):
        serving_app.json_to_array([{"b64": "***"}], STRING)
    with pytest.raises(serving_app.ServingError,
                       match="Type: Number is not of expected type: string"):
        serving_app.json_to_array([1], STRING)


def test_request_to_arrays_formats():
    specs = {"image": FLOAT, "mask": serving_app.TensorSpecInfo(1, "float", (-1, -1, -1, 1))}
    img, msk = np.zeros((2, 2, 3)).tolist(), np.ones((2, 2, 1)).tolist()
    fmt, arrays = serving_app.request_to_arrays(
        {"instances": [{"image": img, "mask": msk}] * 3}, specs, "complete")
    assert fmt == "row" and arrays["image"].shape == (3, 2, 2, 3)
    fmt, arrays = serving_app.request_to_arrays(
        {"inputs": {"image": [img], "mask": [msk], "ignored": 1}}, specs, "complete")
    assert fmt == "columnar" and arrays["mask"].shape == (1, 2, 2, 1)
    with pytest.raises(serving_app.ServingError, match="expects shape \\[\\?,\\?,\\?,1\\]"):
        serving_app.request_to_arrays({"inputs": {"image": [img], "mask": [img]}}, specs, "c")
    with pytest.raises(serving_app.ServingError, match="Missing named input: mask"):
        serving_app.request_to_arrays({"inputs": {"image": [img]}}, specs, "complete")
    with pytest.raises(serving_app.ServingError, match="must only have keys: image,mask"):
        serving_app.request_to_arrays({"instances": [{"image": img}]}, specs, "complete")
    with pytest.raises(serving_app.ServingError, match="No values in 'instances'"):
        serving_app.request_to_arrays({"instances": []}, specs, "complete")
    single = {"x": serving_app.TensorSpecInfo(1, "float", (-1, 2))}
    fmt, arrays = serving_app.request_to_arrays({"instances": [[1, 2], [3, 4]]}, single, "s")
    np.testing.assert_array_equal(arrays["x"], [[1, 2], [3, 4]])


def test_arrays_to_json_matches_tf_serving():
    # Floats as TF Serving's WriteDecimal: %g, full precision when %g does not round-trip,
    # ".0" on whole numbers.
    values = np.array([[0.2, 1.0, 1e6, 1 / 3], [np.nan, np.inf, -np.inf, -2.5]], np.float32)
    text = serving_app.arrays_to_json({"y": values}, "columnar")
    assert text == ('{"outputs": [[0.2, 1.0, 1e+06, 0.333333343], '
                    '[NaN, Infinity, -Infinity, -2.5]]}')
    parsed = json.loads(text)["outputs"]
    np.testing.assert_array_equal(np.asarray(parsed, np.float32)[0], values[0])
    # Row format, one output: a list of values; several outputs: a list of objects; names
    # ending in _bytes are base64.
    rows = json.loads(serving_app.arrays_to_json({"y": values}, "row"))["predictions"]
    assert len(rows) == 2 and rows[0][:2] == [0.2, 1.0]
    both = json.loads(serving_app.arrays_to_json(
        {"out_bytes": np.array([b"\x89PNG", b"ab"], object),
         "label": np.array([b"a", b"b"], object),
         "n": np.array([1, 2], np.int64)}, "row"))["predictions"]
    assert both[0] == {"out_bytes": {"b64": base64.b64encode(b"\x89PNG").decode()},
                       "label": "a", "n": 1}
    with pytest.raises(serving_app.ServingError, match="inconsistent batch size"):
        serving_app.arrays_to_json({"a": np.zeros(2), "b": np.zeros(3)}, "row")


def test_parse_json_body_errors():
    with pytest.raises(serving_app.ServingError, match="The document is empty"):
        serving_app.parse_json_body(b"  ")
    with pytest.raises(serving_app.ServingError, match="JSON Parse error: .* at offset: 1"):
        serving_app.parse_json_body(b"{x")
    with pytest.raises(serving_app.ServingError, match="Is not object"):
        serving_app.parse_json_body(b"[]")
    assert serving_app.parse_json_body(b'{"a": NaN}')["a"] != 0  # TF Serving accepts NaN


def test_http_status_mapping():
    import tensorflow as tf

    e = serving_app.error_from_exception(tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\n\nDetected at node x defined at (most recent call "
                    "last):\n<stack traces unavailable>\nUnknown image file format."))
    assert (e.http_status, e.message) == (400, "Unknown image file format.")
    assert serving_app.error_from_exception(tf.errors.NotFoundError(None, None, "m")) \
        .http_status == 404
    assert serving_app.error_from_exception(RuntimeError("boom")).http_status == 500


# --------------------------------------------------------------------------------------------
# Unit tests, no server: model manager (fake loader) and config file
# --------------------------------------------------------------------------------------------

class FakeServable:
    def __init__(self, name, version, path):
        if os.path.exists(os.path.join(path, "BROKEN")):
            raise ValueError(f"cannot load {path}")
        self.name, self.version, self.path = name, version, path


def _version(base, v, broken=False):
    os.makedirs(os.path.join(base, str(v)), exist_ok=True)
    with open(os.path.join(base, str(v), "saved_model.pb"), "wb") as f:
        f.write(b"x")
    if broken:
        open(os.path.join(base, str(v), "BROKEN"), "w").close()


def test_manager_swaps_versions_and_reports_failures(tmp_path):
    base = str(tmp_path / "m")
    loads = []

    def loader(name, version, path):
        loads.append(version)
        return FakeServable(name, version, path)

    manager = serving_app.ModelManager([serving_app.ModelConfig("m", base)], 0, loader)
    manager.poll_once()
    with pytest.raises(serving_app.ServingError, match=r"Could not find any versions of model m"):
        manager.status("m")
    _version(base, 1)
    os.makedirs(os.path.join(base, "7", "variables"))  # half-written: ignored
    os.makedirs(os.path.join(base, "tmp"))  # not a version
    manager.poll_once()
    assert manager.servable("m").version == 1
    _version(base, 2, broken=True)
    manager.poll_once()
    manager.poll_once()  # same broken files: not retried
    assert loads == [1, 2]
    status = manager.status("m")["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "END"), ("1", "AVAILABLE")]
    assert status[0]["status"]["error_code"] != "OK"
    assert "cannot load" in status[0]["status"]["error_message"]
    assert manager.servable("m").version == 1  # the old version keeps serving
    os.remove(os.path.join(base, "2", "BROKEN"))
    with open(os.path.join(base, "2", "saved_model.pb"), "wb") as f:
        f.write(b"fixed")  # new files: retried
    manager.poll_once()
    assert manager.servable("m").version == 2
    assert manager.available() == {"m": [2]}
    assert manager.status("m", version=1)["model_version_status"][0]["state"] == "END"
    with pytest.raises(serving_app.ServingError, match=r"Specific\(m, 1\)"):
        manager.servable("m", version=1)
    with pytest.raises(serving_app.ServingError, match=r"Latest\(other\)"):
        manager.servable("other")


def test_manager_policies_and_labels(tmp_path):
    base = str(tmp_path / "m")
    for v in (1, 2, 3):
        _version(base, v)
    manager = serving_app.ModelManager(
        [serving_app.ModelConfig("m", base, policy="latest", num_versions=2,
                                 labels={"stable": 2})], 0, FakeServable)
    manager.poll_once()
    assert manager.available() == {"m": [2, 3]}
    assert manager.servable("m", label="stable").version == 2
    with pytest.raises(serving_app.ServingError, match="Unrecognized servable version label"):
        manager.servable("m", label="canary")
    specific = serving_app.ModelManager(
        [serving_app.ModelConfig("m", base, policy="specific", versions=(1,))], 0, FakeServable)
    specific.poll_once()
    assert specific.available() == {"m": [1]}
    with pytest.raises(ValueError, match="policy must be"):
        serving_app.ModelConfig("m", base, policy="newest")


def test_models_config_file_parses():
    models = serving_app.parse_model_config_file(os.path.join(REPO, "serving", "models.config"))
    assert [m.name for m in models] == ["glcic"]
    assert models[0].base_path == "/models/glcic"
    assert models[0].policy == "latest" and models[0].num_versions == 1


def test_batching_parameters_file_parses():
    # BatchingParameters (session_bundle_config.proto) is not in the tensorflow-serving-api
    # wheel; check the text proto's syntax and field names against the proto instead.
    fields = {"max_batch_size", "batch_timeout_micros", "num_batch_threads",
              "max_enqueued_batches", "allowed_batch_sizes", "thread_pool_name"}
    seen = {}
    with open(os.path.join(REPO, "serving", "batching_parameters.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"(\w+) \{ value: (\d+) \}", line)
            if m:
                assert m.group(1) in fields, line
                seen[m.group(1)] = int(m.group(2))
            else:
                assert line == "pad_variable_length_inputs: false", line
                seen["pad_variable_length_inputs"] = False
    assert seen["max_batch_size"] >= 1 and seen["num_batch_threads"] >= 1
    assert seen["pad_variable_length_inputs"] is False


# --------------------------------------------------------------------------------------------
# Unit tests, no server: client request builders
# --------------------------------------------------------------------------------------------

def test_rest_predict_body_formats():
    rows = serving_client.rest_predict_body({"image_bytes": [b"ab"], "mask_bytes": [b"c"]})
    assert rows == {"signature_name": "serving_default",
                    "instances": [{"image_bytes": {"b64": "YWI="}, "mask_bytes": {"b64": "Yw=="}}]}
    cols = serving_client.rest_predict_body(
        {"image": np.zeros((1, 1, 1, 3), np.float32)}, "complete", "columns")
    assert cols == {"signature_name": "complete", "inputs": {"image": [[[[0.0, 0.0, 0.0]]]]}}
    with pytest.raises(ValueError, match="different batch sizes"):
        serving_client.rest_predict_body({"a": [b"x"], "b": [b"y", b"z"]})
    with pytest.raises(ValueError, match="format must be one of"):
        serving_client.rest_predict_body({"a": [b"x"]}, format="csv")
    assert serving_client.rest_outputs({"predictions": [{"b64": "YWI="}]}) == {"": [b"ab"]}
    assert serving_client.rest_outputs({"outputs": {"a": [1], "b": [{"b64": "Yw=="}]}}) == {
        "a": [1], "b": [b"c"]}


def test_grpc_predict_request_fields():
    from tensorflow.core.framework import types_pb2

    request = serving_client.build_predict_request(
        "glcic", {"image_bytes": [b"png1", b"png2"], "mask_bytes": [b"m1", b"m2"]}, version=3)
    assert request.model_spec.name == "glcic"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 3
    image = request.inputs["image_bytes"]
    assert image.dtype == types_pb2.DT_STRING
    assert [d.size for d in image.tensor_shape.dim] == [2]
    assert list(image.string_val) == [b"png1", b"png2"]

    arr = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3) / 12
    request = serving_client.build_predict_request("glcic", {"image": arr}, "complete",
                                                   label="stable")
    assert request.model_spec.version_label == "stable"
    assert not request.model_spec.HasField("version")
    proto = request.inputs["image"]
    assert proto.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2, 2, 3]
    np.testing.assert_array_equal(serving_client.tensor_proto_to_array(proto), arr)
    with pytest.raises(ValueError, match="not both"):
        serving_client.build_predict_request("glcic", {"image": arr}, version=1, label="x")
    status = serving_client.build_status_request("glcic", version=2)
    assert status.model_spec.name == "glcic" and status.model_spec.version.value == 2


def test_grpc_client_against_loopback_fake():
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class Fake(prediction_service_pb2_grpc.PredictionServiceServicer,
               model_service_pb2_grpc.ModelServiceServicer):
        """A loopback gRPC PredictionService/ModelService: echoes reversed image bytes."""

        def Predict(self, request, context):
            from tensorflow_serving.apis import predict_pb2

            if request.model_spec.name != "glcic":
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found for request: "
                              f"Latest({request.model_spec.name})")
            images = list(request.inputs["image_bytes"].string_val)
            response = predict_pb2.PredictResponse()
            response.outputs["completed_bytes"].CopyFrom(
                serving_client.make_tensor_proto([i[::-1] for i in images]))
            return response

        def GetModelStatus(self, request, context):
            from tensorflow_serving.apis import get_model_status_pb2

            response = get_model_status_pb2.GetModelStatusResponse()
            status = response.model_version_status.add()
            status.version = 7
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    fake = Fake()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(fake, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with serving_client.GrpcClient(f"127.0.0.1:{port}", "glcic", timeout=30) as client:
            assert client.complete(b"abc", b"m") == b"cba"
            assert client.complete([b"ab", b"cd"], [b"m", b"n"]) == [b"ba", b"dc"]
            assert client.status() == [{"version": 7, "state": "AVAILABLE", "error_code": 0,
                                        "error_message": ""}]
        with serving_client.GrpcClient(f"127.0.0.1:{port}", "nope", timeout=30) as client:
            with pytest.raises(serving_client.ServingError, match="NOT_FOUND: Servable not"):
                client.complete(b"abc", b"m")
    finally:
        server.stop(grace=None)


# --------------------------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------------------------

def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_client_cli_rest(server, tmp_path):
    image, mask = make_image(seed=8), make_mask()
    (tmp_path / "in.png").write_bytes(png(image))
    (tmp_path / "mask.png").write_bytes(png(mask))
    out = tmp_path / "out" / "done.png"
    result = _run_cli("serving/client.py", "--url", server.url, "--model", MODEL,
                      "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                      "--out", str(out), "--format", "columns", "--status")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "AVAILABLE" in result.stdout and "wrote" in result.stdout
    _check_completed_png(out.read_bytes(), image, mask)
    bad = _run_cli("serving/client.py", "--url", server.url, "--model", "nope", "--status")
    assert bad.returncode != 0 and "404" in bad.stderr


@pytest.mark.parametrize("args,match", [
    ([], "exactly one of --model_base_path and --model_config_file"),
    (["--model_base_path", "x", "--model_config_file", "y"], "exactly one of"),
    (["--model_base_path", "x", "--max_body_bytes", "0"], "--max_body_bytes must be >= 1"),
    (["--model_base_path", "x", "--file_system_poll_wait_seconds", "-1"], "must be >= 0"),
    (["--model_config_file", "/nonexistent/models.config"], "no such file"),
])
def test_server_cli_rejects_bad_flags(args, match):
    result = _run_cli("serving/server.py", *args, timeout=60)
    assert result.returncode == 2 and match in result.stderr, result.stderr[-2000:]
