"""Holes: how they are filled and shown to the network (and, in the data issue, generated).

Convention everywhere in glcic_tf: a mask is float32 (..., H, W, 1) with 1 = hole, 0 = known.
"""

from __future__ import annotations

import tensorflow as tf

from glcic_tf.config import DataConfig


def fill_holes(image: tf.Tensor, mask: tf.Tensor, mean_pixel) -> tf.Tensor:
    """Replaces hole pixels (mask == 1) with the mean pixel value; (..., H, W, 3) in [0, 1]."""
    mean = tf.cast(tf.reshape(tf.constant(mean_pixel, tf.float32), [3]), image.dtype)
    mask = tf.cast(mask, image.dtype)
    return image * (1.0 - mask) + mean * mask


def network_inputs(image: tf.Tensor, mask: tf.Tensor, data: DataConfig) -> dict:
    """The completion network's input dict for a ground-truth (or hole-filled) image and mask.

    "mean_fill": RGB in [0, 1] with holes set to the mean pixel value (this implementation's
    convention). "torch7": RGB minus the mean, holes set to 0, as the authors' Torch7 models were
    trained (the official `inpaint.lua` subtracts `datamean` and `maskedFill`s the hole with 0).
    """
    mask = tf.cast(mask, tf.float32)
    image = tf.cast(image, tf.float32)
    if data.input_convention == "mean_fill":
        x = fill_holes(image, mask, data.mean_pixel)
    elif data.input_convention == "torch7":
        mean = tf.reshape(tf.constant(data.mean_pixel, tf.float32), [3])
        x = (image - mean) * (1.0 - mask)
    else:
        raise ValueError(f"unknown input_convention {data.input_convention!r}")
    return {"image": x, "mask": mask}


def composite(generated: tf.Tensor, image: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Generated pixels inside the hole, original pixels outside."""
    mask = tf.cast(mask, generated.dtype)
    return generated * mask + tf.cast(image, generated.dtype) * (1.0 - mask)
