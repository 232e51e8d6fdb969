"""Smooth fills of holes in stock TensorFlow ops: push-pull and harmonic (Laplace) fills.

Used by the completion network's `harmonic_residual` output (`ModelConfig.output`): the
convolutions see the hole filled smoothly from its border instead of with the mean colour, and
the network learns a correction of that fill. Everything here is made of pooling, resizing,
slicing and arithmetic, so a SavedModel that contains it runs unchanged in TF Serving.

* `push_pull_fill`: the classical pull-push (Gortler et al. 1996) pyramid: average the known
  pixels down a pyramid (`avg_pool`, known pixels weighted by how much of them is known), then
  from the coarsest level up, keep each level's known average where it is known and take the
  coarser level's (bilinearly upsampled) value where it is not. One pass, no iterations.
* `ring_fill`: the hole's outer rings filled from its border inwards, one ring a step, each
  pixel of a ring the mean of its already-filled 4-neighbours: the discrete counterpart of
  OpenCV's fast marching inpainting (Telea, INPAINT_TELEA) with radius 1, without its gradient
  term. Used as the base of the in-graph post-processing (`glcic_tf.inference.poisson`), where
  only the band along the hole's border matters.
* `harmonic_fill`: a cascadic multigrid solution of Laplace's equation inside the hole with the
  known pixels as the boundary: from coarse to fine, start from the coarser level's solution and
  run Jacobi sweeps (each hole pixel becomes the mean of its 4 neighbours; image borders are
  mirrored, so a hole at the border has a zero-gradient boundary there): `iterations` at full
  resolution, twice as many at half resolution, four times at quarter resolution and coarser
  (they cost 4x and 16x less a sweep and carry the slow, low-frequency part). Why 16 / 32 / 64
  sweeps, and how close the fill alone comes to OpenCV's Telea: docs/results.md.

Images are float [B, H, W, C] (any H, W), masks [B, H, W, 1] with 1 = hole; pixels outside the
hole are returned unchanged. A batch element with no known pixel at all is filled with 0.5.
"""

from __future__ import annotations

import tensorflow as tf

# Pyramid levels: enough for 2**12 = 4096 px sides (a level of 1 px stays 1 px).
MAX_LEVELS = 12
DEFAULT_ITERATIONS = 16
# Sweeps double from one level to the next coarser one, this many times (then stay).
COARSE_DOUBLINGS = 2
_EPS = 1e-6


def _pyramid(image: tf.Tensor, known: tf.Tensor, levels: int):
    """[(weighted sum, weight)] from full resolution down, each level half the previous."""
    pyramid = [(image * known, known)]
    for _ in range(levels - 1):
        num, den = pyramid[-1]
        # avg_pool with SAME padding averages the valid pixels only, so sums stay consistent.
        pyramid.append((tf.nn.avg_pool2d(num, 2, 2, "SAME"), tf.nn.avg_pool2d(den, 2, 2, "SAME")))
    return pyramid


def _upsample(x: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    return tf.image.resize(x, tf.shape(like)[1:3], method="bilinear")


def _neighbour_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean of the 4 neighbours of every pixel, image borders mirrored (Neumann boundary)."""
    p = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return 0.25 * (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:])


def _level_values(num, den):
    """Known average and its weight in [0, 1] (1 = fully known) of one pyramid level."""
    weight = tf.clip_by_value(den, 0.0, 1.0)
    return num / tf.maximum(den, _EPS), weight


def _fill(image: tf.Tensor, mask: tf.Tensor, iterations: int, levels: int) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    dtype = image.dtype
    image = tf.cast(image, tf.float32)
    known = 1.0 - tf.cast(mask, tf.float32)
    pyramid = _pyramid(image, known, levels)
    num, den = pyramid[-1]
    # Coarsest level: the known average where anything is known, else the image's known mean
    # (0.5 where nothing at all is known).
    total = tf.reduce_sum(image * known, axis=[1, 2], keepdims=True)
    count = tf.reduce_sum(known, axis=[1, 2], keepdims=True)
    overall = tf.where(count > 0, total / tf.maximum(count, _EPS), 0.5)
    value, weight = _level_values(num, den)
    x = weight * value + (1.0 - weight) * overall
    for level in range(len(pyramid) - 2, -1, -1):
        num, den = pyramid[level]
        value, weight = _level_values(num, den)
        x = weight * value + (1.0 - weight) * _upsample(x, num)
        # Coarser levels are 4x cheaper a sweep and carry the slow (low-frequency) part of
        # the solution: they get twice the sweeps of the next finer level.
        sweeps = iterations * 2 ** min(level, COARSE_DOUBLINGS)
        if sweeps > 0:
            fixed, free = weight * value, 1.0 - weight
            _, x = tf.while_loop(
                lambda i, _: i < sweeps,
                lambda i, y: (i + 1, fixed + free * _neighbour_mean(y)),
                (tf.constant(0), x))
    hole = 1.0 - known
    return tf.cast(image * known + x * hole, dtype)


def _neighbour_sum(x: tf.Tensor) -> tf.Tensor:
    """Sum of the 4 neighbours of every pixel, 0 beyond the image."""
    p = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]


def ring_fill(image: tf.Tensor, mask: tf.Tensor, rings: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Fills the outer `rings` rings of the hole from its border inwards.

    Each step, every hole pixel with a filled (or known) 4-neighbour takes the mean of those
    neighbours and counts as filled for the next step (pixels beyond the image count as
    neither).

    Returns:
      (image with the rings filled, mask of what is still hole), float32.
    """
    image = tf.cast(image, tf.float32)
    known = 1.0 - tf.cast(mask, tf.float32)
    x = image * known  # 0 where not filled yet, so neighbour sums need no weights
    for _ in range(int(rings)):
        count = _neighbour_sum(known)
        ring = (1.0 - known) * tf.cast(count > 0.5, tf.float32)
        x = x + ring * _neighbour_sum(x) / tf.maximum(count, 1.0)
        known = known + ring
    return x, 1.0 - known


def push_pull_fill(image: tf.Tensor, mask: tf.Tensor, levels: int = MAX_LEVELS) -> tf.Tensor:
    """The hole filled by the pull-push pyramid (no iterations); known pixels unchanged."""
    return _fill(image, mask, 0, levels)


def harmonic_fill(image: tf.Tensor, mask: tf.Tensor, iterations: int = DEFAULT_ITERATIONS,
                  levels: int = MAX_LEVELS) -> tf.Tensor:
    """The hole filled with the (approximate) harmonic interpolant of its border.

    Args:
      image: float [B, H, W, C]; values inside the hole are ignored.
      mask: [B, H, W, 1], 1 = hole.
      iterations: Jacobi sweeps per pyramid level (coarse to fine).
      levels: pyramid levels (sides halve each level).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    return _fill(image, mask, int(iterations), int(levels))
