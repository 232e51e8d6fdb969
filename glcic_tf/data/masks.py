"""Holes: how they are generated, filled and shown to the network.

Convention everywhere in glcic_tf: a mask is float32 (..., H, W, 1) with 1 = hole, 0 = known.

Generation (graph only, stateless random ops, one `seed` of shape [2] per example):
`sample_rect_holes` draws the paper's rectangles and the local discriminator's patch around the
first one (centred on it, as the paper, or anywhere containing it: `MaskConfig.local_patch`);
`sample_freeform_holes` draws random strokes inside the patch; `sample_holes`
dispatches on `MaskConfig.kind` ("rect", "freeform", "mixed").
"""

from __future__ import annotations

import math

import tensorflow as tf

from glcic_tf.config import MASK_KINDS, DataConfig, MaskConfig


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


# --- hole generation (graph only, stateless random ops) ----------------------------------------
#
# Every sampler takes a `seed`: an int32/int64 tensor of shape [2] for TF's stateless random ops.
# The same seed always gives the same holes, eagerly or inside `Dataset.map`, so training streams
# are reproducible and evaluation holes depend only on (image key, seed).

# Each free-form stroke is a polyline of up to this many segments.
SEGMENTS_PER_STROKE = 4
# A stroke segment's length, as a fraction of the local patch side.
_SEGMENT_LENGTH_RANGE = (0.1, 0.4)


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def _uniform_int(shape, seed: tf.Tensor, low, high) -> tf.Tensor:
    """Integers uniform in [low, high] (inclusive; tensors broadcast) with a stateless seed."""
    u = tf.random.stateless_uniform(shape, seed, dtype=tf.float32)
    low = tf.cast(low, tf.float32)
    span = tf.cast(high, tf.float32) - low + 1.0
    # u < 1, so floor(u * span) <= span - 1; the minimum guards float round-off.
    return tf.cast(tf.minimum(low + tf.floor(u * span), tf.cast(high, tf.float32)), tf.int32)


def rect_mask(boxes: tf.Tensor, image_size: int) -> tf.Tensor:
    """The union of rectangles as a float32 [S, S, 1] mask (1 = hole).

    Args:
      boxes: int32 [N, 4] rows of (y, x, height, width) in pixels.
      image_size: S, the side of the square image.
    """
    boxes = tf.cast(tf.reshape(boxes, [-1, 4]), tf.int32)
    y, x, h, w = tf.unstack(boxes, axis=1)
    line = tf.range(image_size)[tf.newaxis, :]
    in_y = (line >= y[:, tf.newaxis]) & (line < (y + h)[:, tf.newaxis])  # [N, S]
    in_x = (line >= x[:, tf.newaxis]) & (line < (x + w)[:, tf.newaxis])
    inside = in_y[:, :, tf.newaxis] & in_x[:, tf.newaxis, :]  # [N, S, S]
    return tf.cast(tf.reduce_any(inside, axis=0), tf.float32)[:, :, tf.newaxis]


def sample_rect_holes(image_size: int, masks: MaskConfig, seed) -> dict:
    """The paper's holes: `num_holes` rectangles and the local patch around the first one.

    Each side is uniform in [hole_min, hole_max]; each rectangle is placed uniformly among the
    positions where it lies inside the image. The `local_size` patch contains the first
    rectangle and lies inside the image (possible because hole_max <= local_size <=
    image_size, which the config checks): with `masks.local_patch == "centred"` (the paper) it
    is centred on the rectangle (floor((2y + h - L) / 2)) and shifted inwards where it would
    leave the image; with "containing" it is uniform among the positions that contain it.

    Args:
      image_size: S, the side of the square crop.
      masks: hole parameters.
      seed: [2] integer seed for stateless random ops.

    Returns:
      {"mask": float32 [S, S, 1], "local_offset": int32 [2] (y, x), "boxes": int32 [N, 4]
      (y, x, height, width)}.
    """
    _check_sizes(image_size, masks)
    s_size, s_pos, s_local = _split(seed, 3)
    n, size, local = masks.num_holes, image_size, masks.local_size
    hw = _uniform_int([n, 2], s_size, masks.hole_min, masks.hole_max)
    yx = _uniform_int([n, 2], s_pos, 0, size - hw)
    boxes = tf.concat([yx, hw], axis=1)
    if masks.local_patch == "centred":
        offset = centred_start(yx[0], yx[0] + hw[0], local, size)
    else:
        # Uniform top-left in [max(0, end - L), min(start, S - L)] on each axis.
        low = tf.maximum(0, yx[0] + hw[0] - local)
        high = tf.minimum(yx[0], size - local)
        offset = _uniform_int([2], s_local, low, high)
    return {"mask": rect_mask(boxes, size), "local_offset": offset, "boxes": boxes}


def centred_start(first, end, local_size: int, size: int) -> tf.Tensor:
    """Start of the `local_size` window centred on [first, end), clipped to [0, size - L].

    floor((first + end - L) / 2): the window [start, start + L) holds [first, end) whenever
    end - first <= L, and clipping keeps that true for a span inside [0, size).
    """
    first, end = tf.cast(first, tf.int32), tf.cast(end, tf.int32)
    start = tf.math.floordiv(first + end - local_size, 2)
    return tf.clip_by_value(start, 0, size - local_size)


def centred_offset(mask: tf.Tensor, local_size: int) -> tf.Tensor:
    """Top-left (y, x) of the `local_size` patch centred on the holes' bounding box, clipped to
    the image; int32 [2]. The patch contains the whole bounding box whenever it fits."""
    size = mask.shape[0]
    if size is None or mask.shape[1] != size:
        raise ValueError(f"centred_offset needs a square mask of static size, got {mask.shape}")
    hole = mask[..., 0] > 0.5

    def axis_start(any_hole):  # any_hole: bool [S] along one axis
        first = tf.argmax(tf.cast(any_hole, tf.int32), output_type=tf.int32)
        end = size - tf.argmax(tf.cast(any_hole[::-1], tf.int32), output_type=tf.int32)
        return centred_start(first, end, local_size, size)

    return tf.stack([axis_start(tf.reduce_any(hole, axis=1)),
                     axis_start(tf.reduce_any(hole, axis=0))])


def stroke_mask(patch_size: int, masks: MaskConfig, seed) -> tf.Tensor:
    """Random free-form strokes drawn on a [P, P, 1] float32 grid (1 = hole), never empty.

    1 to `max_strokes` strokes; each is a polyline of 1 to SEGMENTS_PER_STROKE segments of random
    angle and length (10-40% of P) from a random start point, its vertices clipped to the grid
    and rounded to pixel centres, with a width uniform in [stroke_width_min, stroke_width_max].
    A pixel is a hole when its distance to an active segment is at most half that width, so
    every vertex pixel is a hole and the mask is never empty.
    """
    k, v, p = masks.max_strokes, SEGMENTS_PER_STROKE, patch_size
    s_n, s_seg, s_start, s_angle, s_len, s_width = _split(seed, 6)
    num_strokes = _uniform_int([], s_n, 1, k)
    num_segments = _uniform_int([k], s_seg, 1, v)
    start = tf.random.stateless_uniform([k, 1, 2], s_start, 0.0, p - 1.0)
    angle = tf.random.stateless_uniform([k, v], s_angle, 0.0, 2.0 * math.pi)
    length = tf.random.stateless_uniform(
        [k, v], s_len, _SEGMENT_LENGTH_RANGE[0] * p, _SEGMENT_LENGTH_RANGE[1] * p)
    steps = tf.stack([length * tf.sin(angle), length * tf.cos(angle)], axis=-1)  # [k, v, 2]
    points = tf.concat([start, start + tf.cumsum(steps, axis=1)], axis=1)  # [k, v + 1, 2]
    points = tf.round(tf.clip_by_value(points, 0.0, p - 1.0))
    a, b = points[:, :-1], points[:, 1:]  # segment ends, [k, v, 2]
    width = tf.cast(_uniform_int([k], s_width, masks.stroke_width_min, masks.stroke_width_max),
                    tf.float32)
    active = ((tf.range(k) < num_strokes)[:, tf.newaxis]
              & (tf.range(v)[tf.newaxis, :] < num_segments[:, tf.newaxis]))  # [k, v]

    # Distance from every pixel centre to every segment.
    grid = tf.cast(tf.range(p), tf.float32)
    yy, xx = tf.meshgrid(grid, grid, indexing="ij")
    pix = tf.reshape(tf.stack([yy, xx], axis=-1), [-1, 1, 1, 2])  # [P*P, 1, 1, 2]
    ab = b - a
    ap = pix - a
    t = tf.reduce_sum(ap * ab, -1) / tf.maximum(tf.reduce_sum(ab * ab, -1), 1e-6)
    t = tf.clip_by_value(t, 0.0, 1.0)
    dist2 = tf.reduce_sum(tf.square(ap - t[..., tf.newaxis] * ab), -1)  # [P*P, k, v]
    radius2 = tf.square(width / 2.0)[:, tf.newaxis]
    hit = (dist2 <= radius2) & active
    return tf.reshape(tf.cast(tf.reduce_any(hit, axis=[1, 2]), tf.float32), [p, p, 1])


def sample_freeform_holes(image_size: int, masks: MaskConfig, seed) -> dict:
    """Free-form strokes inside a uniformly placed `local_size` patch.

    The strokes are drawn on the patch's own grid and padded into the image, so the hole always
    lies inside the patch; with `masks.local_patch == "centred"` the local discriminator's
    patch is then re-centred on the strokes' bounding box (which it still contains).

    Returns:
      {"mask": float32 [S, S, 1], "local_offset": int32 [2] (y, x)}.
    """
    _check_sizes(image_size, masks)
    s_offset, s_strokes = _split(seed, 2)
    size, local = image_size, masks.local_size
    offset = _uniform_int([2], s_offset, 0, size - local)
    patch = stroke_mask(local, masks, s_strokes)
    pad = tf.stack([[offset[0], size - local - offset[0]],
                    [offset[1], size - local - offset[1]], [0, 0]])
    mask = tf.ensure_shape(tf.pad(patch, pad), [size, size, 1])
    if masks.local_patch == "centred":
        offset = centred_offset(mask, local)
    return {"mask": mask, "local_offset": offset}


def sample_holes(image_size: int, masks: MaskConfig, seed, kind: str | None = None) -> dict:
    """Holes of `kind` (default `masks.kind`): "rect", "freeform" or "mixed".

    "mixed" draws free-form strokes with probability `masks.freeform_ratio`, rectangles
    otherwise.

    Returns:
      {"mask": float32 [S, S, 1], "local_offset": int32 [2] (y, x)}.
    """
    kind = masks.kind if kind is None else kind
    if kind == "rect":
        out = sample_rect_holes(image_size, masks, seed)
        return {"mask": out["mask"], "local_offset": out["local_offset"]}
    if kind == "freeform":
        return sample_freeform_holes(image_size, masks, seed)
    if kind == "mixed":
        s_choice, s_holes = _split(seed, 2)
        use_strokes = tf.random.stateless_uniform([], s_choice) < masks.freeform_ratio
        return tf.cond(use_strokes,
                       lambda: sample_holes(image_size, masks, s_holes, "freeform"),
                       lambda: sample_holes(image_size, masks, s_holes, "rect"))
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")


def _check_sizes(image_size: int, masks: MaskConfig) -> None:
    if not masks.hole_max <= masks.local_size <= image_size:
        raise ValueError(
            f"holes need hole_max <= local_size <= image_size, got hole_max={masks.hole_max}, "
            f"local_size={masks.local_size}, image_size={image_size}")
