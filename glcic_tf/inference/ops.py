"""Completion in TensorFlow ops, shared by the Completer and the SavedModel's signatures.

`complete_full_resolution` completes one image of any size: it is scaled to
`sizing.network_size` (bilinear with anti-aliasing); the network's hole at that size is every
pixel that overlaps the full-resolution hole (resized hole > 0), so that no content from inside
a thin hole can leak into the completion when the image is downscaled. When no resizing is
needed (sides already multiples of 4 and <= maxdim) the image and hole go to the network
untouched. The network input is built with `masks.network_inputs` (the config's input
convention and mean pixel value) by `keras_complete_fn`; the network's output is composited
with the (resized) input, upsampled to the original size and composited again at full
resolution: pixels outside the hole are the input's, bit for bit.

These ops run eagerly, in the Completer's tf.functions and inside the exported graph
(`glcic_tf.inference.export`), so `pipelines/complete.py` and TF Serving give the same pixels.
"""

from __future__ import annotations

from typing import Callable

from glcic_tf.inference.images import LUMA
from glcic_tf.inference.sizing import network_size_tf

# complete_fn(image [B, h, w, 3] float32 in [0, 1], hole [B, h, w, 1] float32 0/1) -> composite
CompleteFn = Callable[..., "object"]
# Resized holes above this count as hole: any overlap with the full-resolution hole.
_RESIZED_HOLE_EPS = 1e-3


def mask_gray_tf(mask):
    """A decoded mask [H, W, C] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) in [0, 1] -> [H, W, 1].

    Colour is reduced to luma and multiplied by alpha when there is one. Works for a channel
    count known only at run time (tf.io.decode_image with channels=0).
    """
    import tensorflow as tf

    mask = tf.convert_to_tensor(mask, tf.float32)
    channels = tf.shape(mask)[-1]
    has_color = channels >= 3
    color_idx = tf.where(has_color, tf.constant([0, 1, 2]), tf.constant([0, 0, 0]))
    rgb = tf.gather(mask, color_idx, axis=-1)
    gray = tf.reduce_sum(rgb * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)
    has_alpha = tf.equal(channels, 2) | tf.equal(channels, 4)
    alpha = tf.gather(mask, tf.reshape(channels - 1, [1]), axis=-1)
    alpha = tf.where(has_alpha, alpha, tf.ones_like(alpha))
    return gray * alpha


def keras_complete_fn(model, data_config) -> CompleteFn:
    """The network's composite for a batch: network_inputs -> model -> composite.

    Args:
      model: the completion network (a keras.Model with inputs `image`, `mask`, or a
        `glcic_tf.networks.folding.FoldedNetwork`).
      data_config: `DataConfig` (input convention and mean pixel value).

    Returns:
      fn(image [B, h, w, 3] in [0, 1], hole [B, h, w, 1] 0/1) -> composite [B, h, w, 3] float32,
      h and w multiples of 4.
    """
    from glcic_tf.data import masks

    def fn(image, hole):
        inputs = masks.network_inputs(image, hole, data_config)
        generated = model(inputs, training=False)
        return masks.composite(generated, image, inputs["mask"])

    return fn


def complete_full_resolution(image, hole, complete_fn: CompleteFn, maxdim):
    """Completes one image of any size in TensorFlow ops (eager or inside a graph).

    Args:
      image: [H, W, 3] float32 in [0, 1].
      hole: [H, W, 1] float32, 1 = hole (already thresholded).
      complete_fn: batched composite at the network's size (`keras_complete_fn`, or the
        SavedModel's `complete` signature).
      maxdim: the long side is scaled down to this when larger.

    Returns:
      [H, W, 3] float32: the upsampled completion inside the hole, `image` outside.
    """
    import tensorflow as tf

    from glcic_tf.data import masks

    image = tf.convert_to_tensor(image, tf.float32)
    hole = tf.convert_to_tensor(hole, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    net_h, net_w = network_size_tf(height, width, maxdim)
    same = tf.logical_and(tf.equal(net_h, height), tf.equal(net_w, width))

    def resized():
        size = tf.stack([net_h, net_w])
        small = tf.image.resize(image[tf.newaxis], size, antialias=True)
        small_hole = tf.image.resize(hole[tf.newaxis], size, antialias=True)
        small_hole = tf.cast(small_hole > _RESIZED_HOLE_EPS, tf.float32)
        return tf.clip_by_value(small, 0.0, 1.0), small_hole

    def untouched():
        return image[tf.newaxis], hole[tf.newaxis]

    small, small_hole = tf.cond(same, untouched, resized)
    out = tf.cast(complete_fn(small, small_hole), tf.float32)
    out = tf.cond(same, lambda: out,
                  lambda: tf.image.resize(out, tf.stack([height, width]), method="bilinear"))
    return masks.composite(tf.clip_by_value(out[0], 0.0, 1.0), image, hole)


def to_uint8_tf(image):
    """[0, 1] float -> uint8, rounding to nearest (x * 255 rounded; exact for k / 255)."""
    import tensorflow as tf

    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
