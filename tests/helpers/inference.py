"""Images, masks and reference composites for the inference tests (completer, regions,
post-processing, export) and the complete.py / export.py command tests."""

import os

import numpy as np

from helpers.images import png_bytes


def keras_network_from_export(version_dir):
    """(config, Keras completion network) restored from a float32 SavedModel's `variables/`
    (the object graph `train.py --init-from` reads); fails when nothing matched."""
    import tensorflow as tf

    from glcic_tf.config import GLCICConfig
    from glcic_tf.networks import models

    config = GLCICConfig.load(os.path.join(version_dir, "assets", "config.json"))
    model = models.completion_network(config.model.width, config.model)
    status = tf.train.Checkpoint(completion=model).restore(
        os.path.join(version_dir, "variables", "variables"))
    status.expect_partial().assert_nontrivial_match()
    return config, model


def gradient_photo(h, w, seed=0, noise=3.0, dtype=np.uint8):
    """Smooth colour gradients plus Gaussian noise (std `noise` levels of 255): uint8 [H, W, 3],
    or float32 in [0, 1] with dtype=np.float32."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 180 + 30
    image = np.clip(base + rng.normal(0, noise, (h, w, 3)), 0, 255).astype(np.uint8)
    return image if dtype == np.uint8 else (image / 255.0).astype(np.float32)


def holes(shape, *boxes):
    """bool `shape`, True inside each (y0, x0, y1, x1) box."""
    hole = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        hole[y0:y1, x0:x1] = True
    return hole


def save_png(path, array, mode=None):
    """Writes `array` as a PNG file (Pillow `mode`, e.g. "LA"); returns the path as a str."""
    with open(path, "wb") as f:
        f.write(png_bytes(array, mode))
    return str(path)


def keras_composite(model, config, image, mask):
    """The Keras model's composite: float32 image [B, H, W, 3], mask [B, H, W, 1] -> float32."""
    from glcic_tf.data import masks

    out = model(masks.network_inputs(image, mask, config.data), training=False)
    return masks.composite(out, image, mask).numpy()


def keras_composite_u8(model, config, image_u8, hole):
    """`keras_composite` of one uint8 image [H, W, 3] with a bool hole [H, W], rounded to uint8."""
    x = image_u8[None].astype(np.float32) / 255.0
    m = hole[None, ..., None].astype(np.float32)
    out = keras_composite(model, config, x, m)
    return np.round(np.clip(out[0], 0, 1) * 255).astype(np.uint8)
