"""The `tf.train.Example` schema of the image shards: feature names, encoding and parsing.

Written by `pipelines/make_tfrecords.py` (`glcic_tf.data.tfrecords`), read by the input pipelines
(`glcic_tf.data.input_pipeline`), checked by `glcic_tf.data.shards` and validated by
`glcic_tf.data.validation`:

| feature          | type   | meaning                                                            |
|------------------|--------|--------------------------------------------------------------------|
| `image/encoded`  | bytes  | the image, 8-bit RGB; original bytes kept when already JPEG/PNG RGB |
| `image/format`   | bytes  | `jpeg` or `png`                                                    |
| `image/height`   | int64  | pixel rows                                                         |
| `image/width`    | int64  | pixel columns                                                      |
| `image/channels` | int64  | always 3 after normalisation                                       |
| `image/key`      | bytes  | stable id derived from the source path (also drives the split)     |

Readers need only `image/encoded` (and `image/key` when present); the other four are for people
and for TFDV. Beside the shards, `PREFIX-dataset_info.json` records counts per split, rejects by
reason, the train split's mean pixel value (RGB in [0, 1]), size statistics and the shard files
(`glcic_tf.data.datasets`: one metadata file per dataset prefix, and how readers find it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from glcic_tf.data.normalize import NormalizedImage

FEATURE_ENCODED = "image/encoded"
FEATURE_FORMAT = "image/format"
FEATURE_HEIGHT = "image/height"
FEATURE_WIDTH = "image/width"
FEATURE_CHANNELS = "image/channels"
FEATURE_KEY = "image/key"


def to_example_bytes(image: NormalizedImage) -> bytes:
    """Serialises a `NormalizedImage` (`glcic_tf.data.normalize`) as a `tf.train.Example` in
    this schema."""

    def _bytes(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        FEATURE_ENCODED: _bytes(image.encoded),
        FEATURE_FORMAT: _bytes(image.format.encode()),
        FEATURE_HEIGHT: _int(image.height),
        FEATURE_WIDTH: _int(image.width),
        FEATURE_CHANNELS: _int(3),
        FEATURE_KEY: _bytes(image.key.encode()),
    })).SerializeToString()


def decode_example(serialized: tf.Tensor) -> dict:
    """Parses one serialized tf.train.Example and decodes its image (graph only).

    Returns:
      {"image": uint8 [H, W, 3], "key": string scalar ("" when the record has no key)}.
    """
    features = tf.io.parse_single_example(serialized, {
        FEATURE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        FEATURE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    })
    image = tf.io.decode_image(features[FEATURE_ENCODED], channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    return {"image": image, "key": features[FEATURE_KEY]}
