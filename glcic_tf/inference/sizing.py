"""The size an image reaches the network at, and whether a model was trained for it.

An image is scaled so that its long side is at most `maxdim` and its sides are rounded to
multiples of 4 (`round(size / 4) * 4`, halves up, as the official `inpaint.lua`): the network's
two stride-2 layers need them. The default `maxdim` follows the model's training scale:
500 px for the paper's 256 px crops, as the 2018 official tool (its 2020 version uses 600 with
post-processing off by default), scaled with the crop size for other presets
(`default_maxdim`). `scale_warning` says when an image or a hole reaches the network far
larger than anything seen in training. `network_size` and `network_size_tf` are the same
integer arithmetic in Python and in TensorFlow ops (the SavedModel's), so both agree exactly.
"""

from __future__ import annotations

from glcic_tf.inference.images import CompletionError

DEFAULT_MAXDIM = 500
# The network sees images or holes this many times larger than in training: warn.
SCALE_WARNING_FACTOR = 2.0


def _round4(num: int, den: int) -> int:
    """round(num / den / 4) * 4 with halves rounded up, at least 4, in exact integer arithmetic."""
    return max(1, (2 * num + 4 * den) // (8 * den)) * 4


def default_maxdim(config) -> int:
    """The long side a model completes at by default: the official tool's 500 px for the
    paper's 256 px training crops, scaled with the crop size for other presets (a 128 px model
    gets 252), so photos reach the network at about the scale it was trained at."""
    if config is None:
        return DEFAULT_MAXDIM
    return _round4(DEFAULT_MAXDIM * int(config.data.image_size), 256)


def scale_warning(config, net_height: int, net_width: int, hole_box: tuple[int, int] | None,
                  name: str = "image") -> str | None:
    """A warning when a model runs far outside the scale it was trained at, else None.

    The network was trained on `data.image_size` crops of images whose shorter side was
    resized to [resize_min, resize_max], with holes of at most `masks.hole_max` px (free-form
    strokes inside a `masks.local_size` patch). An image whose shorter side reaches the
    network more than SCALE_WARNING_FACTOR times larger than resize_max, or a hole more than
    that factor larger than the local patch, is out of that distribution: the dilated layers
    then combine features at distances they were never trained on (see docs/results.md, "Why
    the old demo painted noise").

    Args:
      net_height, net_width: the size the network completes at (after maxdim scaling).
      hole_box: (height, width) of the largest hole's bounding box at that size, or None.
    """
    if config is None:
        return None
    d, m = config.data, config.masks
    problems = []
    if min(net_height, net_width) > SCALE_WARNING_FACTOR * d.resize_max:
        problems.append(f"its shorter side reaches the network at {min(net_height, net_width)} "
                        f"px, while training resized images to {d.resize_min}-{d.resize_max} "
                        f"px")
    if hole_box is not None and max(hole_box) > SCALE_WARNING_FACTOR * m.local_size:
        problems.append(f"a hole spans {max(hole_box)} px at that scale, while training holes "
                        f"were at most {m.hole_max} px (local patch {m.local_size} px)")
    if not problems:
        return None
    return (f"{name}: the model ({config.name} preset, {d.image_size} px training crops) runs "
            f"far outside its training scale: " + "; ".join(problems) + ". Expect poor "
            f"results; scale the image down (--maxdim {default_maxdim(config)}) or use a model "
            f"trained at this scale.")


def network_size(height: int, width: int, maxdim: int = DEFAULT_MAXDIM) -> tuple[int, int]:
    """(height, width) the network sees: long side scaled to <= maxdim, sides multiples of 4."""
    if maxdim < 4:
        raise CompletionError(f"maxdim must be >= 4, got {maxdim}")
    longest = max(height, width)
    if longest > maxdim:
        return _round4(height * maxdim, longest), _round4(width * maxdim, longest)
    return _round4(height, 1), _round4(width, 1)


def network_size_tf(height, width, maxdim):
    """`network_size` in TensorFlow int64 ops (same integer arithmetic); int32 results."""
    import tensorflow as tf

    h = tf.cast(height, tf.int64)
    w = tf.cast(width, tf.int64)
    maxdim = tf.cast(maxdim, tf.int64)
    longest = tf.maximum(h, w)
    scaled = longest > maxdim
    num_scale = tf.where(scaled, maxdim, tf.constant(1, tf.int64))
    den = tf.where(scaled, longest, tf.constant(1, tf.int64))

    def round4(n):
        return tf.maximum(tf.constant(1, tf.int64), (2 * n * num_scale + 4 * den) // (8 * den)) * 4

    return tf.cast(round4(h), tf.int32), tf.cast(round4(w), tf.int32)
