"""TFRecord schema and the training / evaluation input pipelines (tf.data, graph only).

## tf.train.Example schema (written by `pipelines/make_tfrecords.py`)

| feature          | type   | meaning                                                            |
|------------------|--------|--------------------------------------------------------------------|
| `image/encoded`  | bytes  | the image, 8-bit RGB; original bytes kept when already JPEG/PNG RGB |
| `image/format`   | bytes  | `jpeg` or `png`                                                    |
| `image/height`   | int64  | pixel rows                                                         |
| `image/width`    | int64  | pixel columns                                                      |
| `image/channels` | int64  | always 3 after normalisation                                       |
| `image/key`      | bytes  | stable id derived from the source path (also drives the split)     |

Beside the shards, `dataset_info.json` records counts per split, rejects by reason, the train
split's mean pixel value (RGB in [0, 1]) and size statistics.
"""

from __future__ import annotations

import json

FEATURE_ENCODED = "image/encoded"
FEATURE_FORMAT = "image/format"
FEATURE_HEIGHT = "image/height"
FEATURE_WIDTH = "image/width"
FEATURE_CHANNELS = "image/channels"
FEATURE_KEY = "image/key"

DATASET_INFO_NAME = "dataset_info.json"


def read_dataset_info(path: str) -> dict:
    """Reads `dataset_info.json` (a file path or the folder holding it)."""
    import tensorflow as tf

    if tf.io.gfile.isdir(path):
        path = path.rstrip("/") + "/" + DATASET_INFO_NAME
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {DATASET_INFO_NAME} at {path}")
    with tf.io.gfile.GFile(path) as f:
        info = json.load(f)
    mean = info.get("mean_pixel")
    if not (isinstance(mean, list) and len(mean) == 3):
        raise ValueError(f"{path}: 'mean_pixel' must be a list of 3 numbers, got {mean!r}")
    return info
