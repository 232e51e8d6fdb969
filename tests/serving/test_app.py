"""The embedded server's app in this process (`glcic_tf.serving.app`, served by
`glcic_tf.serving.server.serving_in_thread`) on the tiny export: predictions run off the event
loop, the prediction deadline (504), and a model config file with two models and labels.
"""

from __future__ import annotations

import base64
import concurrent.futures
import shutil
import threading

import httpx
import numpy as np
import pytest

from glcic_tf.serving.app import create_app
from glcic_tf.serving.manager import ModelManager
from glcic_tf.serving.model_config import ModelConfig, parse_model_config_file
from glcic_tf.serving.servable import Servable
from glcic_tf.serving.server import serving_in_thread

from helpers.images import noise
from helpers.serving import (MODEL, REAL_URL, assert_error, available_versions,
                             check_completed_png, embedded_only, good_pair, instance, make_mask)


# --------------------------------------------------------------------------------------------
# Concurrency: status answers while predictions run
# --------------------------------------------------------------------------------------------

@embedded_only
def test_status_answers_while_predicting(served_base):
    """Predictions run off the event loop: with one held inside the model, status, metadata
    and other predictions' errors still answer; releasing it completes the prediction."""
    gate, inside = threading.Event(), threading.Event()

    class HeldServable(Servable):
        def run(self, signature, inputs):
            inside.set()
            assert gate.wait(120), "the test never released the prediction"
            return super().run(signature, inputs)

    manager = ModelManager([ModelConfig(MODEL, served_base)], poll_wait_seconds=0,
                           loader=HeldServable)
    app = create_app(manager, num_threads=2)
    with serving_in_thread(app) as url, \
            concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(timeout=30) as c:
        model_url = f"{url}/v1/models/{MODEL}"
        future = pool.submit(httpx.post, f"{model_url}:predict",
                             json={"instances": [good_pair()]}, timeout=120)
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
# The prediction deadline, and a model config file with two models and labels
# --------------------------------------------------------------------------------------------

@embedded_only
def test_predict_past_the_deadline_gets_504_and_the_server_goes_on(served_base):
    gate = threading.Event()

    class SlowServable(Servable):
        def run(self, signature, inputs):
            gate.wait(60)
            return super().run(signature, inputs)

    manager = ModelManager([ModelConfig(MODEL, served_base)], poll_wait_seconds=0,
                           loader=SlowServable)
    app = create_app(manager, num_threads=2, timeout_seconds=2.0)
    with serving_in_thread(app) as url, httpx.Client(timeout=30) as c:
        try:
            r = c.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [good_pair()]})
            assert_error(r, 504, "Deadline Exceeded")
        finally:
            gate.set()
        # Warm the servable outside any deadline, then a prediction answers in time.
        pair = good_pair()
        manager.servable(MODEL).run("serving_default", {
            k: np.array([base64.b64decode(v["b64"])], dtype=object) for k, v in pair.items()})
        r = c.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [pair]})
        assert r.status_code == 200, r.text[:500]


@pytest.fixture(scope="module")
def two_models(request, tmp_path_factory):
    """A --model_config_file with two models (labels on the second, which has versions 1 and
    2), served in-process from copies of the tiny export."""
    if REAL_URL:  # `local`, which the answers are compared with, is then the real server's
        pytest.skip("needs the local tiny export (TFSERVING_REST_URL set)")
    export = request.getfixturevalue("tiny_exports")["fp32"]
    root = tmp_path_factory.mktemp("two_models")
    shutil.copytree(export, root / "a" / "1")
    for v in (1, 2):
        shutil.copytree(export, root / "b" / str(v))
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
    manager = ModelManager(parse_model_config_file(str(config)), poll_wait_seconds=0)
    with serving_in_thread(create_app(manager)) as url:
        yield url


def test_model_config_file_serves_two_models_with_labels(two_models, local):
    url = two_models
    image, mask = noise(32, 32, seed=11), make_mask()
    body = {"instances": [instance(image, mask)]}
    with httpx.Client(timeout=120) as c:
        versions = {m: sorted(available_versions(c.get(f"{url}/v1/models/{m}").json()))
                    for m in ("a", "b")}
        assert versions == {"a": [1], "b": [1, 2]}  # b's policy: all versions
        for path in ("a", "b", "b/versions/1", "b/labels/stable", "b/labels/canary"):
            r = c.post(f"{url}/v1/models/{path}:predict", json=body)
            assert r.status_code == 200, (path, r.text[:500])
            check_completed_png(base64.b64decode(r.json()["predictions"][0]["b64"]), image,
                                mask, local)
        status = c.get(f"{url}/v1/models/b/labels/canary").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2"]
        meta = c.get(f"{url}/v1/models/b/labels/stable/metadata").json()
        assert meta["model_spec"]["version"] == "1"
        # INVALID_ARGUMENT, as TF Serving answers an unknown label.
        assert_error(c.post(f"{url}/v1/models/b/labels/nightly:predict", json=body), 400,
                     "Unrecognized servable version label: nightly")
        assert_error(c.get(f"{url}/v1/models/c"), 404, "c")
