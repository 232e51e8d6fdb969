"""Benchmark: images/s of the images-to-TFRecords Beam pipeline (DirectRunner).

Writes N synthetic 480x640 JPEGs (smooth gradients + noise, quality 90, ~100 KB: photo-like
sizes) into a temporary directory and times `glcic_tf.data.tfrecords.run` end to end (pipeline
construction, decode, normalise, encode Examples, write shards and dataset_info.json). Reports
the median of a few runs with min and max.

Usage:
  python -m glcic_tf.benchmarks.make_tfrecords            # 200 images x 3 runs
  python -m glcic_tf.benchmarks.make_tfrecords --quick    # 30 images x 2 runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Sequence

from glcic_tf import console


def _write_images(directory: str, n: int, height: int = 480, width: int = 640) -> int:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    total = 0
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        base = np.stack([127 + 100 * np.sin(xx / (40 + 7 * c) + yy / 60 + phase[c])
                         for c in range(3)], axis=-1)
        noisy = base + rng.normal(0, 8, size=base.shape)
        path = os.path.join(directory, f"img_{i:05d}.jpg")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        total += os.path.getsize(path)
    return total


def run(quick: bool = False, pipeline_args: Sequence[str] = ()) -> dict:
    """Times the pipeline; returns images/s (median, min, max) and the set-up."""
    from glcic_tf.data import tfrecords

    n = 30 if quick else 200
    repeats = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="glcic_bench_tfr_") as tmp:
        src = os.path.join(tmp, "images")
        os.makedirs(src)
        num_bytes = _write_images(src, n)
        rates, seconds = [], []
        for r in range(repeats):
            start = time.perf_counter()
            info = tfrecords.run([os.path.join(src, "*.jpg")],
                                 os.path.join(tmp, f"out{r}", "bench"), val_fraction=0.05,
                                 pipeline_args=list(pipeline_args))
            elapsed = time.perf_counter() - start
            written = info["counts"]["train"] + info["counts"]["val"]
            if written != n:
                raise RuntimeError(f"benchmark wrote {written} of {n} images: {info}")
            seconds.append(elapsed)
            rates.append(n / elapsed)
    return {
        "benchmark": "make_tfrecords",
        "images": n,
        "image_size": [480, 640],
        "input_mb": round(num_bytes / 2**20, 2),
        "runs": repeats,
        "images_per_s_median": round(statistics.median(rates), 2),
        "images_per_s_min": round(min(rates), 2),
        "images_per_s_max": round(max(rates), 2),
        "seconds": [round(s, 2) for s in seconds],
        "runner": "DirectRunner",
        "pipeline_args": list(pipeline_args),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 images, 2 runs")
    console.add_verbose_flag(parser)
    args, beam_args = parser.parse_known_args(argv)
    console.quiet_libraries(args.verbose)
    print(json.dumps(run(quick=args.quick, pipeline_args=beam_args), indent=2))


if __name__ == "__main__":
    main()
