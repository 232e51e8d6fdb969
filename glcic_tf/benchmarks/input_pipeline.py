"""Benchmark: images/s delivered by the training input `glcic_tf.data.input_pipeline.make_dataset`.

Writes 4 TFRecord shards of 200 synthetic 384x512 JPEGs (smooth random fields plus grain,
quality 90: photo-like sizes) into a temporary directory, builds `make_dataset` with the paper
preset (256x256 crops, shorter side resized to 256-384, one 96-128 px hole, 128 px local patch)
at batch 32, and times a few hundred batches after a warm-up that fills the shuffle buffer.
Reports the median images/s of several repeats with min and max, once with AUTOTUNE
parallelism (the default) and once with a fixed parallelism of 2 (this machine's cores).

The input must deliver well above what a training step consumes (docs/training_speed.md gives
the step's images/s per machine), or it becomes the bottleneck.

Usage:
  python -m glcic_tf.benchmarks.input_pipeline            # 4 x 200 images, 3 x 100 batches
  python -m glcic_tf.benchmarks.input_pipeline --quick    # 2 x 50 images, 2 x 10 batches
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

HEIGHT, WIDTH = 384, 512


def _photo(rng, height: int, width: int):
    """A smooth random field (a few octaves of upsampled noise) plus grain, uint8 RGB."""
    import numpy as np
    import tensorflow as tf

    field = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((3, 1.0), (9, 0.5), (27, 0.25)):
        coarse = rng.uniform(-1, 1, (cells, cells * width // height, 3)).astype(np.float32)
        field += weight * tf.image.resize(coarse, [height, width], method="bicubic").numpy()
    field = 128 + 60 * field + rng.normal(0, 4, field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


def _write_shards(directory: str, num_shards: int, per_shard: int) -> int:
    import numpy as np
    import tensorflow as tf

    from glcic_tf.data import schema

    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    rng = np.random.default_rng(0)
    total = 0
    for s in range(num_shards):
        path = os.path.join(directory, f"bench-{s:05d}-of-{num_shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(per_shard):
                encoded = tf.io.encode_jpeg(_photo(rng, HEIGHT, WIDTH), quality=90).numpy()
                example = tf.train.Example(features=tf.train.Features(feature={
                    schema.FEATURE_ENCODED: feature(encoded),
                    schema.FEATURE_FORMAT: feature(b"jpeg"),
                    schema.FEATURE_HEIGHT: int_feature(HEIGHT),
                    schema.FEATURE_WIDTH: int_feature(WIDTH),
                    schema.FEATURE_CHANNELS: int_feature(3),
                    schema.FEATURE_KEY: feature(f"bench/{s}/{i}".encode()),
                }))
                writer.write(example.SerializeToString())
        total += os.path.getsize(path)
    return total


def _time(pattern: str, config, batch_size: int, parallel: int | None, warmup: int,
          batches: int, repeats: int) -> dict:
    from glcic_tf.data import input_pipeline as data

    ds = data.make_dataset(pattern, config, batch_size=batch_size, num_parallel_calls=parallel)
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(iterator)
        batch["image"].numpy()  # the last batch is really there
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return {"images_per_s_median": round(statistics.median(rates), 1),
            "images_per_s_min": round(min(rates), 1),
            "images_per_s_max": round(max(rates), 1),
            "images_per_s_runs": [round(r, 1) for r in rates]}


def run(quick: bool = False) -> dict:
    """Times make_dataset with AUTOTUNE and with a fixed parallelism of 2; returns images/s."""
    from glcic_tf import config as cfg

    num_shards, per_shard = (2, 50) if quick else (4, 200)
    warmup, batches, repeats = (3, 10, 2) if quick else (20, 100, 3)
    batch_size = 32
    config = cfg.get_preset("paper")
    results = {}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="glcic_bench_input_") as tmp:
        num_bytes = _write_shards(tmp, num_shards, per_shard)
        pattern = os.path.join(tmp, "bench-*.tfrecord")
        for name, parallel in (("autotune", None), ("fixed_2", 2)):
            results[name] = _time(pattern, config, batch_size, parallel, warmup, batches,
                                  repeats)
    return {
        "benchmark": "input_pipeline",
        "preset": config.name,
        "shards": num_shards,
        "images": num_shards * per_shard,
        "source_size": [HEIGHT, WIDTH],
        "source_mb": round(num_bytes / 2**20, 2),
        "crop": config.data.image_size,
        "resize": [config.data.resize_min, config.data.resize_max],
        "mask_kind": config.masks.kind,
        "batch_size": batch_size,
        "warmup_batches": warmup,
        "batches_per_run": batches,
        "runs": repeats,
        **results,
        "cpus": os.cpu_count(),
        # Other processes share the CPU; a load above the core count lowers the figures.
        "load_average_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="2 shards x 50 images, 2 runs of 10 batches")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
