"""Poisson blending and the paper's post-processing in stock TensorFlow ops.

The paper (Section 4) post-processes a completion with fast-marching inpainting and then
Poisson blending; `postprocessing.postprocess` does it with OpenCV (`cv2.inpaint` INPAINT_TELEA,
then `cv2.seamlessClone` NORMAL_CLONE per connected hole). `postprocess` here does the same
job with pooling, resizing, slicing and arithmetic only, so it can live inside a SavedModel
that TF Serving runs unchanged (`export.py --postprocess in-graph`):

1. base = `fill.ring_fill(completed, hole, BASE_RINGS)`: the hole's outer rings filled from its
   border inwards (in place of Telea's fast marching, which is a sequential front propagation
   with no stock-op equivalent; the blend reads the base only in that band, and the rest of the
   base is the completion itself).
2. The blend solves the discrete Poisson equation inside the hole, known pixels as the
   (Dirichlet) boundary, with the guidance field of `cv2.seamlessClone`: on the grid edge from
   pixel p to its right or lower neighbour, the completion's difference where p lies in the
   hole eroded by 3 px (seamlessClone erodes its mask with a 3x3 kernel 3 times), the base's
   difference elsewhere. The completion keeps its texture inside; the 3 px band along the
   border follows the smooth base, so the completion's offset against its surroundings is
   spread smoothly over the hole instead of showing as a seam. Image borders are mirrored
   (zero-gradient boundary), so holes at the border are handled.

Why no connected-component labelling: with every known pixel a Dirichlet boundary, the
5-point system is block-diagonal over the 4-connected components of the hole (two holes share
no unknown), so solving all holes at once is solving each on its own, which is what the OpenCV
path's per-component `seamlessClone` calls are for. (seamlessClone itself solves over its
mask's bounding box with only the box's border fixed, so known pixels inside the box are
re-solved too, and then discarded; the results differ slightly. `tests/inference/test_poisson.py`
measures both: the in-graph result is the independent sparse solve's, and it is close to
OpenCV's on real crops.)

The solver: for d = result - base, which is 0 on known pixels, the equation is
`d - mean4(d) = rhs` in the hole. It starts from the completion minus the harmonic interpolant
of its band values in the eroded hole (0 in the band, continuous at its edge, exact deep inside,
where both sides follow the completion) and removes the remaining, smooth error by
`blend_cycles` passes of a cascadic multigrid like `fill.harmonic_fill`'s: the residual is
averaged down a pyramid (scaled by 4 a level, as the 5-point operator on a grid twice as
coarse), solved coarse to fine with Jacobi sweeps (more at coarser, cheaper levels).
`blend_iterations` sweeps at full resolution (defaults BLEND_CYCLES, BLEND_ITERATIONS).

Memory: `postprocess_image` works box by box, each box a group of holes grown by MARGIN px, so a
small hole in a large photo costs what the hole's box costs, not what the photo costs (the peak
is a few dozen float32 copies of the largest box; docs/postprocess.md has the measured figures).
"""

from __future__ import annotations

import tensorflow as tf

from glcic_tf.networks import fill

# seamlessClone erodes its mask by this many pixels (a 3x3 kernel, 3 iterations).
ERODE_PIXELS = 3
BLEND_ITERATIONS = 4
# Multigrid passes of the blend's solve; each divides the error by about 5.
BLEND_CYCLES = 3
BASE_RINGS = 2 * (ERODE_PIXELS + 1)
MAX_LEVELS = fill.MAX_LEVELS
# Known pixels kept around the holes' bounding box in `postprocess_image` (the solve reads one).
MARGIN = 8


def erode(hole: tf.Tensor, pixels: int = ERODE_PIXELS) -> tf.Tensor:
    """The hole eroded by a (2 * pixels + 1)^2 square; the image border does not erode it."""
    if pixels <= 0:
        return hole
    known = 1.0 - hole
    # SAME max pooling ignores the padding: outside the image counts as hole, as in cv2.erode.
    return 1.0 - tf.nn.max_pool2d(known, 2 * pixels + 1, 1, "SAME")


def _forward_differences(x: tf.Tensor):
    """x[p + 1] - x[p] along width and height; 0 on the last column / row (mirrored border)."""
    dx = tf.pad(x[:, :, 1:] - x[:, :, :-1], [[0, 0], [0, 0], [0, 1], [0, 0]])
    dy = tf.pad(x[:, 1:] - x[:, :-1], [[0, 0], [0, 1], [0, 0], [0, 0]])
    return dx, dy


def _divergence(gx: tf.Tensor, gy: tf.Tensor) -> tf.Tensor:
    """Backward-difference divergence of an edge field (edges beyond the image are 0)."""
    return (gx - tf.pad(gx[:, :, :-1], [[0, 0], [0, 0], [1, 0], [0, 0]])
            + gy - tf.pad(gy[:, :-1], [[0, 0], [1, 0], [0, 0], [0, 0]]))


def _smooth(x, free, rhs, sweeps):
    """Jacobi sweeps of x - mean4(x) = rhs where free (weighted), x = 0 elsewhere."""
    rhs = free * rhs
    _, x = tf.while_loop(
        lambda i, _: i < sweeps,
        lambda i, y: (i + 1, free * fill._neighbour_mean(y) + rhs),
        (tf.constant(0), x))
    return x


def solve_dirichlet(rhs: tf.Tensor, hole: tf.Tensor, init: tf.Tensor | None = None, *,
                    iterations: int = BLEND_ITERATIONS, cycles: int = BLEND_CYCLES,
                    levels: int = MAX_LEVELS) -> tf.Tensor:
    """Approximately solves d - mean4(d) = rhs in the hole, d = 0 outside it.

    mean4 is the mean of the 4 neighbours with the image border mirrored. A cascadic multigrid:
    the residual of `init` is restricted down a pyramid (average pooling, times 4 a level),
    the correction solved from the coarsest level up with Jacobi sweeps, `iterations` at full
    resolution, 2x and 4x as many on the coarser levels; `cycles` such passes.

    Args:
      rhs: float32 [B, H, W, C].
      hole: [B, H, W, 1], 1 = unknown.
      init: a starting guess (its values outside the hole are ignored), default 0.
    """
    free = tf.cast(hole, tf.float32)
    rhs = tf.cast(rhs, tf.float32) * free
    x = tf.zeros_like(rhs) if init is None else tf.cast(init, tf.float32) * free
    frees = [free]
    for _ in range(levels - 1):
        frees.append(tf.nn.avg_pool2d(frees[-1], 2, 2, "SAME"))
    for _ in range(int(cycles)):
        x = x + _correction(free * (rhs - (x - fill._neighbour_mean(x))), frees, iterations)
    return x


def _correction(residual, frees, iterations):
    """One cascadic multigrid pass for e - mean4(e) = residual (e = 0 outside the hole)."""
    levels = len(frees)
    residuals = [residual]
    for _ in range(levels - 1):
        residuals.append(4.0 * tf.nn.avg_pool2d(residuals[-1], 2, 2, "SAME"))
    e = tf.zeros_like(residuals[-1])
    for level in range(levels - 1, -1, -1):
        if level < levels - 1:
            e = tf.image.resize(e, tf.shape(residuals[level])[1:3], method="bilinear")
        e = frees[level] * e
        # Tiny levels converge in about side^2 sweeps: no more than that.
        side = tf.reduce_max(tf.shape(e)[1:3])
        e = _smooth(e, frees[level], residuals[level],
                    tf.minimum(iterations * 2 ** min(level, fill.COARSE_DOUBLINGS), side * side))
    return e


def poisson_blend(completed: tf.Tensor, base: tf.Tensor, hole: tf.Tensor, *,
                  erode_pixels: int = ERODE_PIXELS, iterations: int = BLEND_ITERATIONS,
                  cycles: int = BLEND_CYCLES, levels: int = MAX_LEVELS) -> tf.Tensor:
    """seamlessClone's NORMAL_CLONE of `completed` onto `base` inside the hole (see above).

    Args:
      completed: float [B, H, W, C], the completion (its gradients are kept inside the hole
        eroded by `erode_pixels`).
      base: float [B, H, W, C], equal to the image outside the hole (e.g. a smooth fill).
      hole: [B, H, W, 1], 1 = hole.

    Returns:
      float32 [B, H, W, C]: `base` outside the hole, the blend inside.
    """
    hole = tf.cast(hole, tf.float32)
    completed = tf.cast(completed, tf.float32)
    base = tf.cast(base, tf.float32)
    residual = (completed - base) * hole
    inner = erode(hole, erode_pixels)
    gx, gy = _forward_differences(residual)
    rhs = -0.25 * _divergence(inner * gx, inner * gy)
    # Start: 0 in the band, the completion minus the harmonic interpolant of its band values in
    # the eroded hole: continuous, and exact wherever both sides follow the completion.
    start = inner * (residual - fill.harmonic_fill(residual, inner, iterations, levels))
    d = solve_dirichlet(rhs, hole, start, iterations=iterations, cycles=cycles, levels=levels)
    return base + hole * d


def postprocess(completed: tf.Tensor, hole: tf.Tensor, *,
                blend_iterations: int = BLEND_ITERATIONS,
                blend_cycles: int = BLEND_CYCLES) -> tf.Tensor:
    """Ring fill of the hole's border, then Poisson blend, of a batch; pixels outside the hole
    unchanged.

    Args:
      completed: float [B, H, W, 3] in [0, 1], the network's composite.
      hole: [B, H, W, 1], 1 = hole (thresholded).

    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    completed = tf.cast(completed, tf.float32)
    hole = tf.cast(hole, tf.float32)
    # The blend reads the base only on the band outside the eroded hole and one pixel into it
    # (Chebyshev distance <= ERODE_PIXELS + 1 from the known pixels, so 4-neighbour rings
    # <= 2 * (ERODE_PIXELS + 1)); deeper in, any base gives the same result.
    ringed, rest = fill.ring_fill(completed, hole, BASE_RINGS)
    base = ringed + rest * completed
    out = poisson_blend(completed, base, hole, iterations=blend_iterations, cycles=blend_cycles)
    out = tf.clip_by_value(out, 0.0, 1.0)
    return completed * (1.0 - hole) + out * hole


def _runs(present: tf.Tensor):
    """Starts and ends (exclusive) of the runs of True in a bool vector."""
    p = tf.cast(present, tf.int32)
    step = p[1:] - p[:-1]
    starts = tf.where(tf.concat([p[:1] > 0, step > 0], 0))[:, 0]
    ends = tf.where(tf.concat([step < 0, p[-1:] > 0], 0))[:, 0] + 1
    return tf.cast(starts, tf.int32), tf.cast(ends, tf.int32)


def postprocess_image(completed: tf.Tensor, hole: tf.Tensor, *, margin: int = MARGIN,
                      blend_iterations: int = BLEND_ITERATIONS,
                      blend_cycles: int = BLEND_CYCLES) -> tf.Tensor:
    """`postprocess` of one image [H, W, 3], box by box around its holes [H, W, 1].

    The holes, grown by `margin` px, are cut into boxes: the bands of rows they occupy, and in
    each band the runs of columns. Each box holds whole holes with at least `margin` known
    pixels around them and no other box's, so solving box by box is solving the image (the
    system is block-diagonal over the holes), while time and memory follow the boxes, not the
    image: a 4000x3000 photo with two small holes in opposite corners costs two small boxes.
    An empty hole returns `completed` unchanged.
    """
    completed = tf.convert_to_tensor(completed, tf.float32)
    hole = tf.cast(hole, tf.float32)
    inside = hole[..., 0] > 0

    def grow(present):  # a 1-D projection of the holes, grown by `margin` both ways
        x = tf.cast(present, tf.float32)[tf.newaxis, :, tf.newaxis]
        return tf.nn.max_pool1d(x, 2 * margin + 1, 1, "SAME")[0, :, 0] > 0

    row_starts, row_ends = _runs(grow(tf.reduce_any(inside, axis=1)))

    def band(i, out):
        y0, y1 = row_starts[i], row_ends[i]
        col_starts, col_ends = _runs(grow(tf.reduce_any(inside[y0:y1], axis=0)))

        def box(j, out):
            x0, x1 = col_starts[j], col_ends[j]
            done = postprocess(completed[tf.newaxis, y0:y1, x0:x1],
                               hole[tf.newaxis, y0:y1, x0:x1],
                               blend_iterations=blend_iterations, blend_cycles=blend_cycles)[0]
            out = tf.raw_ops.TensorStridedSliceUpdate(
                input=out, begin=tf.stack([y0, x0, 0]), end=tf.stack([y1, x1, 3]),
                strides=[1, 1, 1], value=done)
            return j + 1, out

        _, out = tf.while_loop(lambda j, _: j < tf.size(col_starts), box, (0, out))
        return i + 1, out

    _, out = tf.while_loop(lambda i, _: i < tf.size(row_starts), band, (0, completed))
    return tf.where(hole > 0, out, completed)
