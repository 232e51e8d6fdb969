"""Contract tests of the serving API: TF Serving's REST API, as the exports are served.

By default the module exports a tiny completion network (width 1/16, `tiny` preset, untrained:
its smooth fill is far from the noise test images) with `glcic_tf.export` to a temp base path
and starts the embedded server (`python serving/server.py --rest_api_port 0`, the bound port read
from its log) once for the whole module. Every predict answer is compared with the same
signature run in this process on the same SavedModel (within 1 level of uint8 for PNGs, 1e-6 for
floats) and must differ from its input inside the hole. With `TFSERVING_REST_URL` set, the same
REST tests run against that server instead (a real `tensorflow/serving` serving a glcic export
under `MODEL_NAME`, default glcic; `TFSERVING_MODEL_DIR`, the version directory it serves,
turns the in-process comparison on); the tests that need the embedded server (413 body limit,
hot reload, concurrency) are skipped then:

  TFSERVING_REST_URL=http://localhost:8501 MODEL_NAME=glcic \
      TFSERVING_MODEL_DIR=models/glcic/1 pytest tests/test_serving.py

The unit tests at the end (JSON <-> tensors, model manager, config file, client request
builders, command lines in-process) need no server. Loopback only; every wait and loop is
bounded.
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
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from glcic_tf import serving_app, serving_client
from glcic_tf.export import export_saved_model
from pipeline_scripts import load_script

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

def export_tiny(base_path: str, version: int = 1) -> str:
    """Exports a tiny (width 1/16, untrained) network to base_path/VERSION; returns its path."""
    from glcic_tf import models
    from glcic_tf.config import get_preset

    config = get_preset("tiny")
    model = models.completion_network(width=1 / 16, config=config.model)
    return export_saved_model(model, config, base_path, version=version)


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
    log_path = str(root / "server.log")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    # Port 0: the server binds a free port itself and logs it (no probe-and-release race).
    cmd = [sys.executable, os.path.join(REPO, "serving", "server.py"),
           "--rest_api_port", "0", "--rest_api_host", "127.0.0.1",
           "--model_name", "glcic", "--model_base_path", base_path,
           "--max_body_bytes", str(MAX_BODY), "--file_system_poll_wait_seconds", "0.2",
           "--num_threads", "4", "--log_level", "info"]
    # The server starts on the empty base path while the model is exported here (both import
    # TensorFlow; overlapping them halves the set-up time); it picks version 1 up by polling.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server("", base_path, None, log_path)
    try:
        srv.version_dir = export_tiny(base_path, version=1)
        assert os.path.dirname(srv.version_dir) == base_path
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not srv.url:  # the marker line with the bound port
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{srv.log_tail()}")
            m = re.search(r"Serving glcic on (http://127\.0\.0\.1:\d+)/v1/", srv.log_tail())
            if m:
                srv.url = m.group(1)
            elif time.monotonic() > deadline:
                pytest.fail(f"no 'Serving' line after {STARTUP_TIMEOUT_S} s:\n{srv.log_tail()}")
            else:
                time.sleep(0.1)
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
def local(server):
    """The served SavedModel loaded in this process, to compare answers with (None for a real
    TF Serving unless TFSERVING_MODEL_DIR names the version directory it serves)."""
    import tensorflow as tf

    path = server.version_dir or os.environ.get("TFSERVING_MODEL_DIR")
    return tf.saved_model.load(path) if path else None


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

def _check_completed_png(data: bytes, image: np.ndarray, mask: np.ndarray, local) -> None:
    """The served PNG: the image outside the hole, something else inside it, and what
    `serving_default` gives in this process for the same bytes (within 1 level of uint8)."""
    out = unpng(data)
    assert out.shape == image.shape
    keep = mask == 0
    np.testing.assert_array_equal(out[keep], image[keep])  # known pixels are untouched
    # A server that echoed its input would pass the line above; the tiny network's smooth
    # fill is far from the noise images used here.
    assert np.abs(out[~keep].astype(int) - image[~keep]).mean() > 10
    if local is None:
        return
    import tensorflow as tf

    expected = local.signatures["serving_default"](
        image_bytes=tf.constant([png(image)]), mask_bytes=tf.constant([png(mask)]))
    expected = unpng(expected["completed_bytes"].numpy()[0]).astype(int)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_predict_bytes_rows(http, server, local):
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
        _check_completed_png(base64.b64decode(p["b64"]), image, mask, local)


def test_predict_bytes_columns(http, server, local):
    image, mask = make_image(seed=3), make_mask()
    body = {"signature_name": "serving_default",
            "inputs": {"image_bytes": [b64(png(image))], "mask_bytes": [b64(png(mask))]}}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    outputs = r.json()["outputs"]
    assert isinstance(outputs, list) and len(outputs) == 1
    _check_completed_png(base64.b64decode(outputs[0]["b64"]), image, mask, local)


def test_predict_versioned_path(http, server, local):
    version = current_version(http, server)
    image, mask = make_image(seed=4), make_mask()
    body = {"instances": [{"image_bytes": b64(png(image)), "mask_bytes": b64(png(mask))}]}
    r = http.post(server.model_url(f"/versions/{version}:predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    _check_completed_png(base64.b64decode(r.json()["predictions"][0]["b64"]), image, mask,
                         local)


def test_predict_bytes_is_the_post_processed_signature_output(http, server, local):
    """The REST answer is serving_default run in-process on the same SavedModel: the
    in-graph post-processed picture, which differs from the raw network composite."""
    if local is None:
        pytest.skip("a real TF Serving at TFSERVING_REST_URL without TFSERVING_MODEL_DIR: no "
                    "local SavedModel to compare")
    import tensorflow as tf

    image, mask = make_image(40, 48, seed=7), make_mask(40, 48)
    body = {"instances": [{"image_bytes": b64(png(image)), "mask_bytes": b64(png(mask))}]}
    r = http.post(server.model_url(f"/versions/{current_version(http, server)}:predict"),
                  json=body)
    assert r.status_code == 200, r.text[:1000]
    served = base64.b64decode(r.json()["predictions"][0]["b64"])
    _check_completed_png(served, image, mask, local)
    raw = local.signatures["complete"](
        image=tf.constant(image[None] / 255.0, tf.float32),
        mask=tf.constant(mask[None, ..., None] / 255.0, tf.float32))["completed"].numpy()[0]
    hole = mask > 0
    assert np.abs(unpng(served).astype(int) - np.round(raw * 255))[hole].mean() > 1.0


def _complete_locally(local, image, mask) -> np.ndarray | None:
    if local is None:
        return None
    import tensorflow as tf

    return local.signatures["complete"](image=tf.constant(image),
                                        mask=tf.constant(mask))["completed"].numpy()


def test_predict_complete_rows_and_columns(http, server, local):
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
    assert np.abs(outputs[~keep] - image[~keep]).mean() > 0.05  # the network ran
    expected = _complete_locally(local, image, mask)
    if expected is not None:  # JSON floats carry full precision (%g, then 9 digits)
        np.testing.assert_allclose(outputs, expected, atol=1e-6)


def test_rest_client_round_trip(server, local):
    image, mask = make_image(seed=6), make_mask()
    with serving_client.RestClient(server.url, MODEL, timeout=120) as client:
        assert _available_versions(client.status())
        sigs = client.metadata()["metadata"]["signature_def"]["signature_def"]
        assert "complete" in sigs
        for fmt in serving_client.FORMATS:
            _check_completed_png(client.complete(png(image), png(mask), format=fmt), image,
                                 mask, local)
        image_f = (image[None] / 255.0).astype(np.float32)
        mask_f = (mask[None, ..., None] > 0).astype(np.float32)
        out = client.complete_arrays(image_f, mask_f)
        assert out.shape == (1, 32, 32, 3)
        expected = _complete_locally(local, image_f, mask_f)
        if expected is not None:
            np.testing.assert_allclose(out, expected, atol=1e-6)
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

@embedded_only
def test_status_answers_while_predicting(server):
    """Predictions run off the event loop: with one held inside the model, status, metadata
    and other predictions' errors still answer; releasing it completes the prediction."""
    gate, inside = threading.Event(), threading.Event()

    class HeldServable(serving_app.Servable):
        def run(self, signature, inputs):
            inside.set()
            assert gate.wait(120), "the test never released the prediction"
            return super().run(signature, inputs)

    manager = serving_app.ModelManager(
        [serving_app.ModelConfig(MODEL, server.base_path)], poll_wait_seconds=0,
        loader=HeldServable)
    app = serving_app.create_app(manager, num_threads=2)
    with serving_app.serving_in_thread(app) as url, \
            concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(timeout=30) as c:
        model_url = f"{url}/v1/models/{MODEL}"
        future = pool.submit(httpx.post, f"{model_url}:predict",
                             json={"instances": [_good_pair()]}, timeout=120)
        try:
            assert inside.wait(60), "the prediction never reached the model"
            for _ in range(5):
                assert c.get(model_url).status_code == 200
                assert c.get(f"{model_url}/metadata").status_code == 200
                assert c.post(f"{model_url}:predict", content=b"{").status_code == 400
            assert not future.done()
        finally:
            gate.set()
        response = future.result(timeout=120)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["predictions"]) == 1


# --------------------------------------------------------------------------------------------
# The embedded server in-process on the module's export: timeouts, methods, labels, models
# --------------------------------------------------------------------------------------------

@embedded_only
def test_predict_past_the_deadline_gets_504_and_the_server_goes_on(server):
    gate = threading.Event()

    class SlowServable(serving_app.Servable):
        def run(self, signature, inputs):
            gate.wait(60)
            return super().run(signature, inputs)

    manager = serving_app.ModelManager(
        [serving_app.ModelConfig(MODEL, server.base_path)], poll_wait_seconds=0,
        loader=SlowServable)
    app = serving_app.create_app(manager, num_threads=2, timeout_seconds=2.0)
    with serving_app.serving_in_thread(app) as url, httpx.Client(timeout=30) as c:
        try:
            r = c.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [_good_pair()]})
            assert_error(r, 504, "Deadline Exceeded")
        finally:
            gate.set()
        # Warm the servable outside any deadline, then a prediction answers in time.
        pair = _good_pair()
        manager.servable(MODEL).run("serving_default", {
            k: np.array([base64.b64decode(v["b64"])], dtype=object) for k, v in pair.items()})
        r = c.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [pair]})
        assert r.status_code == 200, r.text[:500]


@embedded_only
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_are_501(http, server, method):
    r = http.post(server.model_url(f":{method}"), json={"examples": [{"x": 1.0}]})
    assert_error(r, 501, "only :predict")


@pytest.fixture(scope="module")
def two_models(server, tmp_path_factory):
    """A --model_config_file with two models (labels on the second, which has versions 1 and
    2), served in-process from copies of the module's export."""
    if server.version_dir is None:
        pytest.skip("needs the module's local export (TFSERVING_REST_URL set)")
    root = tmp_path_factory.mktemp("two_models")
    shutil.copytree(server.version_dir, root / "a" / "1")
    for v in (1, 2):
        shutil.copytree(server.version_dir, root / "b" / str(v))
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
  config {{ name: "a" base_path: "{root / 'a'}" model_platform: "tensorflow" }}
  config {{
    name: "b" base_path: "{root / 'b'}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
}}
""")
    manager = serving_app.ModelManager(serving_app.parse_model_config_file(str(config)),
                                       poll_wait_seconds=0)
    with serving_app.serving_in_thread(serving_app.create_app(manager)) as url:
        yield url


def test_model_config_file_serves_two_models_with_labels(two_models, local):
    url = two_models
    image, mask = make_image(seed=11), make_mask()
    body = {"instances": [{"image_bytes": b64(png(image)), "mask_bytes": b64(png(mask))}]}
    with httpx.Client(timeout=120) as c:
        versions = {m: sorted(_available_versions(c.get(f"{url}/v1/models/{m}").json()))
                    for m in ("a", "b")}
        assert versions == {"a": [1], "b": [1, 2]}  # b's policy: all versions
        for path in ("a", "b", "b/versions/1", "b/labels/stable", "b/labels/canary"):
            r = c.post(f"{url}/v1/models/{path}:predict", json=body)
            assert r.status_code == 200, (path, r.text[:500])
            _check_completed_png(base64.b64decode(r.json()["predictions"][0]["b64"]), image,
                                 mask, local)
        status = c.get(f"{url}/v1/models/b/labels/canary").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2"]
        meta = c.get(f"{url}/v1/models/b/labels/stable/metadata").json()
        assert meta["model_spec"]["version"] == "1"
        # INVALID_ARGUMENT, as TF Serving answers an unknown label.
        assert_error(c.post(f"{url}/v1/models/b/labels/nightly:predict", json=body), 400,
                     "Unrecognized servable version label: nightly")
        assert_error(c.get(f"{url}/v1/models/c"), 404, "c")


def test_serving_default_scales_large_images_down_to_maxdim(http, server, local):
    """Images past the export's maxdim are completed at maxdim and composited back at their
    own size: the answer is serving_default's, not the network run at full size."""
    if local is None:
        pytest.skip("needs the served SavedModel locally (TFSERVING_MODEL_DIR)")
    import tensorflow as tf

    version_dir = server.version_dir or os.environ["TFSERVING_MODEL_DIR"]
    with open(os.path.join(version_dir, "assets", "export.json")) as f:
        maxdim = json.load(f)["maxdim"]
    h, w = 2 * maxdim + 8, int(1.5 * maxdim)
    image, mask = make_image(h, w, seed=12), make_mask(h, w)
    body = {"instances": [{"image_bytes": b64(png(image)), "mask_bytes": b64(png(mask))}]}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:500]
    served = base64.b64decode(r.json()["predictions"][0]["b64"])
    _check_completed_png(served, image, mask, local)
    full = local.signatures["complete"](
        image=tf.constant(image[None, :h // 4 * 4, :w // 4 * 4] / 255.0, tf.float32),
        mask=tf.constant(mask[None, :h // 4 * 4, :w // 4 * 4, None] / 255.0, tf.float32))
    full = np.round(full["completed"].numpy()[0] * 255)
    hole = (mask > 0)[:h // 4 * 4, :w // 4 * 4]
    diff = np.abs(unpng(served)[:h // 4 * 4, :w // 4 * 4].astype(int) - full)[hole].mean()
    assert diff > 1.0, diff


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

def test_client_cli_rest(server, local, tmp_path, capsys):
    cli = load_script("serving/client.py")
    image, mask = make_image(seed=8), make_mask()
    (tmp_path / "in.png").write_bytes(png(image))
    (tmp_path / "mask.png").write_bytes(png(mask))
    out = tmp_path / "out" / "done.png"
    cli.main(cli.parse_args(["--url", server.url, "--model", MODEL,
                             "--image", str(tmp_path / "in.png"),
                             "--mask", str(tmp_path / "mask.png"),
                             "--out", str(out), "--format", "columns", "--status"]))
    stdout = capsys.readouterr().out
    assert "AVAILABLE" in stdout and "wrote" in stdout
    _check_completed_png(out.read_bytes(), image, mask, local)
    with pytest.raises(SystemExit) as e:
        cli.main(cli.parse_args(["--url", server.url, "--model", "nope", "--status"]))
    assert "404" in str(e.value.code)


@pytest.mark.parametrize("args,match", [
    ([], "exactly one of --model_base_path and --model_config_file"),
    (["--model_base_path", "x", "--model_config_file", "y"], "exactly one of"),
    (["--model_base_path", "x", "--max_body_bytes", "0"], "--max_body_bytes must be >= 1"),
    (["--model_base_path", "x", "--file_system_poll_wait_seconds", "-1"], "must be >= 0"),
    (["--model_config_file", "/nonexistent/models.config"], "no such file"),
])
def test_server_cli_rejects_bad_flags(args, match, capsys):
    cli = load_script("serving/server.py")
    with pytest.raises(SystemExit) as e:
        cli.parse_args(args)
    assert e.value.code == 2
    assert match in capsys.readouterr().err
