"""Fixtures of the serving tests: the tiny export they serve, the embedded server as users run
it (`python serving/server.py`, a subprocess) and the same server in this process.

The served model is `tiny_exports`' float32 version (tests/conftest.py), copied into a base path
of each server's own: the hot reload test adds versions to its server's base path, and
`tiny_exports` is read-only. With `TFSERVING_REST_URL` set (helpers/serving.py), `server` and
`api` are that server instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from helpers.scripts import REPO
from helpers.serving import (MAX_BODY, MODEL, REAL_URL, STARTUP_TIMEOUT_S, Server,
                             available_versions, copy_version)


@pytest.fixture(scope="session")
def local(request):
    """The served SavedModel loaded in this process, to compare answers with (None for a real
    TF Serving unless TFSERVING_MODEL_DIR names the version directory it serves)."""
    import tensorflow as tf

    if REAL_URL:
        path = os.environ.get("TFSERVING_MODEL_DIR")
    else:
        path = request.getfixturevalue("tiny_exports")["fp32"]
    return tf.saved_model.load(path) if path else None


@pytest.fixture(scope="session")
def served_base(tiny_exports, tmp_path_factory) -> str:
    """A base path holding the tiny export as version 1, for servers run in this process
    (read-only: copy it before adding versions)."""
    base_path = str(tmp_path_factory.mktemp("served") / MODEL)
    copy_version(tiny_exports["fp32"], base_path, 1)
    return base_path


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """The embedded server as a subprocess on a base path of its own (or the real TF Serving
    at TFSERVING_REST_URL)."""
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
    # The server starts on the empty base path while `tiny_exports` is made here, if this is
    # its first use (both import TensorFlow; overlapping them halves the set-up time); it picks
    # version 1 up by polling.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    srv = Server("", base_path, None, log_path)
    try:
        srv.version_dir = copy_version(request.getfixturevalue("tiny_exports")["fp32"],
                                       base_path, 1)
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
                if r.status_code == 200 and available_versions(r.json()):
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


@pytest.fixture(scope="module")
def api(request):
    """The REST API for tests that need one but not its process: the embedded server in this
    process on `served_base` (or the real TF Serving at TFSERVING_REST_URL)."""
    if REAL_URL:
        yield Server(REAL_URL)
        return
    from glcic_tf.serving.app import create_app
    from glcic_tf.serving.manager import ModelManager
    from glcic_tf.serving.model_config import ModelConfig
    from glcic_tf.serving.server import serving_in_thread

    base_path = request.getfixturevalue("served_base")
    manager = ModelManager([ModelConfig(MODEL, base_path)], poll_wait_seconds=0)
    with serving_in_thread(create_app(manager)) as url:
        yield Server(url, base_path, os.path.join(base_path, "1"))
