"""Contract tests of the serving API: TF Serving's REST API, as the exports are served.

By default the module serves a tiny completion network (`tiny_exports`' float32 version: width
1/16, untrained, its fill far from the noise test images) with the embedded server as users run
it (`python serving/server.py --rest_api_port 0`, the bound port read from its log), started
once for the whole module (tests/serving/conftest.py). Every predict answer is compared with
the same signature run in this process on the same SavedModel (within 1 level of uint8 for
PNGs, 1e-6 for floats) and must differ from its input inside the hole. With
`TFSERVING_REST_URL` set, the same REST tests run against that server instead (a real
`tensorflow/serving` serving a glcic export under `MODEL_NAME`, default glcic;
`TFSERVING_MODEL_DIR`, the version directory it serves, turns the in-process comparison on);
the tests that need the embedded server (413 body limit, 501, hot reload) are skipped then:

  TFSERVING_REST_URL=http://localhost:8501 MODEL_NAME=glcic \
      TFSERVING_MODEL_DIR=models/glcic/1 pytest tests/serving/test_rest_api.py

Loopback only; every wait and loop is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time

import numpy as np
import pytest

from helpers.images import decode, noise, png_bytes
from helpers.serving import (MAX_BODY, MODEL, RELOAD_TIMEOUT_S, assert_error, b64,
                             check_completed_png, complete_locally, current_version,
                             embedded_only, good_pair, instance, make_mask)


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

def test_predict_bytes_rows(http, server, local):
    images = [noise(32, 32, seed=1), noise(48, 32, seed=2)]  # sizes may differ
    masks = [make_mask(32, 32), make_mask(48, 32)]
    body = {"instances": [instance(i, m) for i, m in zip(images, masks)]}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    predictions = r.json()["predictions"]
    # One output: each prediction is the value itself, bytes as {"b64": ...}.
    assert len(predictions) == 2 and all(set(p) == {"b64"} for p in predictions)
    for p, image, mask in zip(predictions, images, masks):
        check_completed_png(base64.b64decode(p["b64"]), image, mask, local)


def test_predict_bytes_columns(http, server, local):
    image, mask = noise(32, 32, seed=3), make_mask()
    body = {"signature_name": "serving_default",
            "inputs": {"image_bytes": [b64(png_bytes(image))],
                       "mask_bytes": [b64(png_bytes(mask))]}}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    outputs = r.json()["outputs"]
    assert isinstance(outputs, list) and len(outputs) == 1
    check_completed_png(base64.b64decode(outputs[0]["b64"]), image, mask, local)


def test_predict_versioned_path(http, server, local):
    version = current_version(http, server)
    image, mask = noise(32, 32, seed=4), make_mask()
    body = {"instances": [instance(image, mask)]}
    r = http.post(server.model_url(f"/versions/{version}:predict"), json=body)
    assert r.status_code == 200, r.text[:1000]
    check_completed_png(base64.b64decode(r.json()["predictions"][0]["b64"]), image, mask,
                        local)


def test_predict_bytes_is_the_post_processed_signature_output(http, server, local):
    """The REST answer is serving_default run in-process on the same SavedModel: the
    in-graph post-processed picture, which differs from the raw network composite."""
    if local is None:
        pytest.skip("a real TF Serving at TFSERVING_REST_URL without TFSERVING_MODEL_DIR: no "
                    "local SavedModel to compare")
    import tensorflow as tf

    image, mask = noise(40, 48, seed=7), make_mask(40, 48)
    body = {"instances": [instance(image, mask)]}
    r = http.post(server.model_url(f"/versions/{current_version(http, server)}:predict"),
                  json=body)
    assert r.status_code == 200, r.text[:1000]
    served = base64.b64decode(r.json()["predictions"][0]["b64"])
    check_completed_png(served, image, mask, local)
    raw = local.signatures["complete"](
        image=tf.constant(image[None] / 255.0, tf.float32),
        mask=tf.constant(mask[None, ..., None] / 255.0, tf.float32))["completed"].numpy()[0]
    hole = mask > 0
    assert np.abs(decode(served).astype(int) - np.round(raw * 255))[hole].mean() > 1.0


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
    expected = complete_locally(local, image, mask)
    if expected is not None:  # JSON floats carry full precision (%g, then 9 digits)
        np.testing.assert_allclose(outputs, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Bad requests: 4xx with {"error": ...}, and the server keeps serving
# --------------------------------------------------------------------------------------------

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
     {"instances": [{"image_bytes": b64(png_bytes(noise(32, 32)))}]}, 400, "mask_bytes"),
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
     {"instances": [{"image_bytes": b64(png_bytes(noise(32, 32))),
                     "mask_bytes": b64(png_bytes(make_mask(16, 32)))}]}, 400, "mask"),
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
    ("unknown_model_predict", "MODEL=nope:predict", {"instances": [good_pair()]}, 404,
     "nope"),
    ("unknown_version_predict", "/versions/987654:predict", {"instances": [good_pair()]}, 404,
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
    ok = http.post(server.model_url(":predict"), json={"instances": [good_pair()]})
    assert ok.status_code == 200, ok.text[:500]


def test_good_request_after_errors(http, server):
    r = http.post(server.model_url(":predict"), json={"instances": [good_pair()]})
    assert r.status_code == 200, r.text[:500]


@embedded_only
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_are_501(http, server, method):
    r = http.post(server.model_url(f":{method}"), json={"examples": [{"x": 1.0}]})
    assert_error(r, 501, "only :predict")


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
    image, mask = noise(h, w, seed=12), make_mask(h, w)
    body = {"instances": [instance(image, mask)]}
    r = http.post(server.model_url(":predict"), json=body)
    assert r.status_code == 200, r.text[:500]
    served = base64.b64decode(r.json()["predictions"][0]["b64"])
    check_completed_png(served, image, mask, local)
    full = local.signatures["complete"](
        image=tf.constant(image[None, :h // 4 * 4, :w // 4 * 4] / 255.0, tf.float32),
        mask=tf.constant(mask[None, :h // 4 * 4, :w // 4 * 4, None] / 255.0, tf.float32))
    full = np.round(full["completed"].numpy()[0] * 255)
    hole = (mask > 0)[:h // 4 * 4, :w // 4 * 4]
    diff = np.abs(decode(served)[:h // 4 * 4, :w // 4 * 4].astype(int) - full)[hole].mean()
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

    pair = good_pair()
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
