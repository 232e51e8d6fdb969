"""What `train_step` reads: the training features of a batch, and a synthetic batch from NumPy.

The input pipeline (`glcic_tf.data`) yields more fields than the step uses (string keys among
them, which cannot be distributed across replicas); `training_features` keeps `TRAIN_FEATURES`.
`synthetic_batch` has the pipeline's element contract without decoding anything, for benchmarks
and tests.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from glcic_tf.config import GLCICConfig


TRAIN_FEATURES = ("image", "mask", "local_offset", "real_local_offset")


def training_features(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Keeps the fields train_step reads (string keys cannot be distributed across replicas)."""
    return dataset.map(lambda d: {k: d[k] for k in TRAIN_FEATURES},
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def synthetic_batch(config: GLCICConfig, batch_size: int | None = None, seed: int = 0,
                    smooth: bool = True) -> dict:
    """A batch with the element contract of `glcic_tf.data.input_pipeline.make_dataset`, from NumPy.

    For benchmarks and tests that must not depend on decoding. `smooth`: random colour waves
    (hole contents predictable from the context); else uniform noise, whose well-spread
    activations keep batch-norm variances well conditioned. One rectangle hole per image inside
    the local patch.
    """
    rng = np.random.default_rng(seed)
    b = batch_size or config.schedule.batch_size
    s, ls = config.data.image_size, config.masks.local_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    freq = rng.uniform(1, 4, size=(b, 1, 1, 3, 2)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(b, 1, 1, 3)).astype(np.float32)
    image = 0.5 + 0.4 * np.sin(2 * np.pi * (freq[..., 0] * yy[None, :, :, None]
                                            + freq[..., 1] * xx[None, :, :, None]) + phase)
    image = image.astype(np.float32)
    if not smooth:
        image = rng.random((b, s, s, 3), dtype=np.float32)
    mask = np.zeros((b, s, s, 1), np.float32)
    offsets = np.zeros((b, 2), np.int32)
    real_offsets = np.zeros((b, 2), np.int32)
    for i in range(b):
        hh, hw = rng.integers(config.masks.hole_min, config.masks.hole_max + 1, size=2)
        y, x = rng.integers(0, s - hh + 1), rng.integers(0, s - hw + 1)
        mask[i, y:y + hh, x:x + hw] = 1
        # Centred on the hole, clipped to the image (masks.centred_start).
        offsets[i] = (min(max((2 * y + hh - ls) // 2, 0), s - ls),
                      min(max((2 * x + hw - ls) // 2, 0), s - ls))
        real_offsets[i] = rng.integers(0, s - ls + 1, size=2)
    masked = image * (1 - mask) + np.asarray(config.data.mean_pixel, np.float32) * mask
    return {"image": image, "mask": mask, "masked": masked.astype(np.float32),
            "local_offset": offsets, "real_local_offset": real_offsets,
            "key": np.array([b"synthetic-%d" % i for i in range(b)])}
