"""REST serving benchmark of the embedded server (serving/server.py) with the full-width network.

`run(quick)` exports a freshly initialised completion network (width 1.0, the paper's), starts
the embedded server as a subprocess on a free loopback port and measures:

* throughput: 8 concurrent clients for 30 s (quick: 5 s), each posting a 256x256 PNG and mask to
  `serving_default` in a loop: requests/s and p50 / p99 latency;
* REST overhead at 512x512: median latency of the same request through REST and of a direct call
  of the signature on the same SavedModel loaded in this process, for `serving_default` (PNG
  bytes, b64 in JSON; target overhead <= 15%) and for `complete` (float arrays as JSON text,
  reported for reference: JSON numbers are an expensive image encoding).

Weights are random: the timing does not depend on them. Loopback only; every loop is bounded in
count and time. Timings depend on the machine's load: other processes sharing the cores show up
as noise.

Usage:
  python -m glcic_tf.benchmarks.serving            # ~3 min on 2 CPU cores
  python -m glcic_tf.benchmarks.serving --quick    # ~1.5 min
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from glcic_tf import console

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENTS = 8
THROUGHPUT_SIZE = 256
OVERHEAD_SIZE = 512
STARTUP_TIMEOUT_S = 300
MAX_REQUESTS = 100_000  # bound on the throughput loop besides its duration


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _inputs(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random photo-like image (uint8) and a centred rectangular hole mask (uint8)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size // 16, size // 16, 3)).astype(np.uint8)
    image = np.kron(coarse, np.ones((16, 16, 1), np.uint8))
    image = np.clip(image.astype(np.int16) + rng.integers(-8, 9, image.shape), 0, 255)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4:size // 2, size // 3:size * 2 // 3] = 255
    return image.astype(np.uint8), mask


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(base_path: str, log_path: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, os.path.join(REPO, "serving", "server.py"), "--rest_api_port",
           str(port), "--rest_api_host", "127.0.0.1", "--model_name", "glcic",
           "--model_base_path", base_path, "--log_level", "warning"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1/models/glcic"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log: {log_path}")
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code == 200 and any(s["state"] == "AVAILABLE"
                                            for s in r.json()["model_version_status"]):
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT_S} s; log: {log_path}")


def _bytes_body(image: np.ndarray, mask: np.ndarray) -> bytes:
    return json.dumps({"instances": [{
        "image_bytes": {"b64": base64.b64encode(_png(image)).decode()},
        "mask_bytes": {"b64": base64.b64encode(_png(mask)).decode()}}]}).encode()


def _throughput(url: str, body: bytes, seconds: float) -> dict:
    import httpx

    end = time.monotonic() + seconds
    per_client = MAX_REQUESTS // CLIENTS

    def client(_):
        latencies, errors = [], 0
        with httpx.Client(timeout=300) as c:
            for _ in range(per_client):
                if time.monotonic() >= end:
                    break
                t0 = time.perf_counter()
                r = c.post(url + ":predict", content=body,
                           headers={"Content-Type": "application/json"})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
        return latencies, errors

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    elapsed = time.perf_counter() - t0
    latencies = np.array([x for lat, _ in results for x in lat])
    return {
        "clients": CLIENTS, "seconds": round(elapsed, 2), "image_size": THROUGHPUT_SIZE,
        "requests": int(latencies.size), "errors": int(sum(e for _, e in results)),
        "requests_per_s": round(latencies.size / elapsed, 3),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 4) if latencies.size else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 4) if latencies.size else None,
    }


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up (tracing, first allocations)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _overhead(url: str, version_dir: str, reps: int) -> dict:
    import httpx
    import tensorflow as tf

    image, mask = _inputs(OVERHEAD_SIZE, seed=1)
    loaded = tf.saved_model.load(version_dir)
    direct_bytes = loaded.signatures["serving_default"]
    direct_float = loaded.signatures["complete"]
    png_image, png_mask = tf.constant([_png(image)]), tf.constant([_png(mask)])
    float_image = tf.constant(image[None] / 255.0, tf.float32)
    float_mask = tf.constant((mask[None, ..., None] > 0).astype(np.float32))
    bytes_body = _bytes_body(image, mask)
    float_body = json.dumps({"signature_name": "complete", "inputs": {
        "image": (image[None] / 255.0).astype(np.float32).tolist(),
        "mask": (mask[None, ..., None] > 0).astype(np.float32).tolist()}}).encode()

    out = {"image_size": OVERHEAD_SIZE, "reps": reps}
    with httpx.Client(timeout=600) as c:
        def rest(body):
            r = c.post(url + ":predict", content=body,
                       headers={"Content-Type": "application/json"})
            r.raise_for_status()
            r.json()  # the client's decoding is part of a REST round trip

        for name, direct, body in (
                ("serving_default", lambda: direct_bytes(image_bytes=png_image,
                                                         mask_bytes=png_mask), bytes_body),
                ("complete", lambda: direct_float(image=float_image, mask=float_mask),
                 float_body)):
            t_direct = _median_time(direct, reps)
            t_rest = _median_time(lambda: rest(body), reps)
            out[name] = {"direct_s": round(t_direct, 4), "rest_s": round(t_rest, 4),
                         "overhead": round(t_rest / t_direct - 1, 4),
                         "request_bytes": len(body)}
    out["serving_default"]["target_overhead"] = 0.15
    out["serving_default"]["meets_target"] = out["serving_default"]["overhead"] <= 0.15
    return out


def run(quick: bool = False) -> dict:
    """Measures the embedded server; returns the figures as a dict (see module docstring)."""
    import httpx

    from glcic_tf.networks import models
    from glcic_tf.config import get_preset
    from glcic_tf.inference.export import export_saved_model

    seconds = 5.0 if quick else 30.0
    reps = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="glcic-serving-bench-") as tmp:
        config = get_preset("paper")
        model = models.completion_network(1.0, config.model)
        version_dir = export_saved_model(model, config, os.path.join(tmp, "glcic"), version=1)
        proc, url = _start_server(os.path.dirname(version_dir), os.path.join(tmp, "server.log"))
        try:
            body = _bytes_body(*_inputs(THROUGHPUT_SIZE))
            with httpx.Client(timeout=300) as c:  # warm-up: first calls trace and allocate
                for _ in range(2):
                    c.post(url + ":predict", content=body).raise_for_status()
            throughput = _throughput(url, body, seconds)
            overhead = _overhead(url, version_dir, reps)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {
        "benchmark": "serving", "quick": quick, "model_width": 1.0,
        "server": "embedded (serving/server.py, Starlette + uvicorn), loopback",
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "throughput": throughput, "rest_overhead": overhead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s of load, 3 repetitions")
    console.add_verbose_flag(parser)
    args = parser.parse_args()
    console.quiet_libraries(args.verbose)
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
