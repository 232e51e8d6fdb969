"""Tiny run directories and smooth held-out shards for the evaluation and learning-curve tests."""

import keras
import numpy as np
import tensorflow as tf

from glcic_tf.benchmarks.completion import he_normal_weights
from glcic_tf.config import get_preset
from glcic_tf.data import schema
from glcic_tf.networks import models
from glcic_tf.training import runs

IMAGES = 3
STEP = 11


def tiny_eval_config():
    """The tiny preset at 32 px crops, width 1/16, a non-default mean pixel: the evaluation
    and learning-curve runs (the trainer tests' config is `helpers.training.tiny_config`)."""
    return get_preset("tiny").override({
        "data.image_size": 32, "data.resize_min": 32, "data.resize_max": 40,
        "data.mean_pixel": [0.5, 0.4, 0.3],
        "masks.local_size": 16, "masks.hole_min": 6, "masks.hole_max": 12,
        "masks.stroke_width_min": 2, "masks.stroke_width_max": 4, "model.width": 1 / 16})


def write_shards(path):
    """IMAGES smooth synthetic photos (40x48 PNG) with keys, in the training schema."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48] / 40.0

    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    with tf.io.TFRecordWriter(path) as writer:
        for i in range(IMAGES):
            f = rng.uniform(1, 3, (3, 2))
            image = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c, 0] * yy + f[c, 1] * xx))
                              for c in range(3)], -1)
            encoded = tf.io.encode_png((image * 255).astype(np.uint8)).numpy()
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                schema.FEATURE_ENCODED: feature(encoded), schema.FEATURE_FORMAT: feature(b"png"),
                schema.FEATURE_KEY: feature(f"img{i}".encode())})).SerializeToString())


def tiny_export_config():
    """The tiny preset at width 1/16 with a non-default mean pixel (what the exports see)."""
    return get_preset("tiny").override({"model.width": 1 / 16,
                                        "data.mean_pixel": [0.5, 0.4, 0.3]})


def make_run_dir(path, seed=0, step=STEP, config=None):
    """A training run dir as training writes it (config.json + a CheckpointManager checkpoint)
    holding a completion network with He-normal weights from `seed` (untrained, but its output
    is far from a smooth fill); `config` defaults to `tiny_eval_config()`."""
    config = config or tiny_eval_config()
    keras.utils.set_random_seed(seed)
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed)
    runs.save_completion_run(path, config, model, step=step)
    return config, model
