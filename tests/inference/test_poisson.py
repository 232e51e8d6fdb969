"""The in-graph post-processing (glcic_tf.inference.poisson): solver, blend and fill against
oracles.

The oracle for the blend is the test's own: the 5-point Poisson system written out pixel by
pixel from the definition (guidance on each grid edge, known pixels fixed, mirrored image
border), the eroded hole from scipy.ndimage, solved exactly with scipy.sparse.
"""

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf

from glcic_tf.inference import poisson, postprocessing
from glcic_tf.networks import fill


def smooth_image(height, width, seed, channels=3):
    rng = np.random.default_rng(seed)
    coarse = rng.random((1, 6, 6, channels)).astype(np.float32)
    return tf.image.resize(coarse, (height, width), method="bicubic").numpy()[0]


def oracle_blend(completed, base, hole, erode=poisson.ERODE_PIXELS):
    """Exact NORMAL_CLONE with Dirichlet boundary: solves the system from its definition."""
    height, width = hole.shape
    inner = scipy.ndimage.binary_erosion(hole, np.ones((3, 3), bool), iterations=erode,
                                         border_value=1)
    index = -np.ones(hole.shape, int)
    ys, xs = np.nonzero(hole)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, vals = [], [], []
    rhs = np.zeros((len(ys), completed.shape[-1]))
    for k, (y, x) in enumerate(zip(ys, xs)):
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            qy, qx = y + dy, x + dx
            if not (0 <= qy < height and 0 <= qx < width):
                continue  # mirrored border: the neighbour is the pixel itself, no edge
            # The edge's guidance: the completion's difference when the edge's first pixel
            # (the upper or left one) is in the eroded hole, the base's otherwise.
            oy, ox = min(y, qy), min(x, qx)
            source = completed if inner[oy, ox] else base
            rows.append(k)
            cols.append(k)
            vals.append(1.0)
            rhs[k] += source[y, x] - source[qy, qx]
            if hole[qy, qx]:
                rows.append(k)
                cols.append(index[qy, qx])
                vals.append(-1.0)
            else:
                rhs[k] += base[qy, qx]
    matrix = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(len(ys), len(ys)))
    out = base.astype(np.float64).copy()
    for c in range(completed.shape[-1]):
        out[ys, xs, c] = scipy.sparse.linalg.spsolve(matrix, rhs[:, c])
    return out


def blend(completed, base, hole, **kwargs):
    return poisson.poisson_blend(completed[None], base[None],
                                 hole[None, ..., None].astype(np.float32), **kwargs).numpy()[0]


def test_harmonic_fill_reproduces_a_linear_ramp():
    yy, xx = np.mgrid[0:96, 0:80].astype(np.float32)
    ramp = np.stack([0.1 + 0.008 * xx, 0.9 - 0.006 * yy, 0.2 + 0.003 * (xx + yy)], -1)
    hole = np.zeros((96, 80, 1), np.float32)
    hole[20:70, 15:60] = 1.0
    image = ramp * (1 - hole)  # the hole's content is discarded
    exactish = fill.harmonic_fill(image[None], hole[None], iterations=400).numpy()[0]
    assert np.abs(exactish - ramp).max() < 1e-3  # a quarter of one level of 255
    default = fill.harmonic_fill(image[None], hole[None]).numpy()[0]
    assert np.abs(default - ramp).max() < 4e-3  # the default sweeps: within 1 level of 255


def test_blending_a_constant_offset_gives_the_base():
    base = smooth_image(64, 72, seed=1)
    hole = np.zeros((64, 72), bool)
    hole[10:50, 12:40] = True
    completed = np.where(hole[..., None], base + 0.25, base).astype(np.float32)
    out = blend(completed, base, hole)
    np.testing.assert_allclose(out, base, atol=2e-3)
    np.testing.assert_array_equal(out[~hole], base[~hole])


@pytest.mark.parametrize("cycles, mean_error, max_error", [
    (poisson.BLEND_CYCLES, 2e-3, 1e-2),  # the default: within 1/2 and 2.5 levels of 255
    (8, 3e-4, 2e-3)])  # more multigrid passes converge to the exact solution
def test_blend_matches_the_exact_sparse_solve(cycles, mean_error, max_error):
    truth = smooth_image(80, 96, seed=2)
    rng = np.random.default_rng(3)
    hole = np.zeros((80, 96), bool)
    hole[8:50, 10:52] = True
    hole[40:80, 70:96] = True  # touches the bottom and right borders
    completed = (truth + 0.15 + 0.05 * rng.standard_normal(truth.shape)).astype(np.float32)
    completed = np.where(hole[..., None], completed, truth)
    base = fill.harmonic_fill(truth[None], hole[None, ..., None].astype(np.float32)).numpy()[0]
    want = oracle_blend(completed, base, hole)
    got = blend(completed, base, hole, cycles=cycles)
    assert np.abs(got - want)[hole].mean() < mean_error
    assert np.abs(got - want)[hole].max() < max_error
    # The blend moved the completion by its offset: far from both inputs.
    assert np.abs(want - completed)[hole].mean() > 0.1


def test_holes_are_solved_independently():
    truth = smooth_image(64, 64, seed=4)
    rng = np.random.default_rng(5)
    completed = (truth + 0.3 * rng.random(truth.shape)).astype(np.float32)
    a = np.zeros((64, 64), bool)
    a[4:30, 4:28] = True
    b = np.zeros((64, 64), bool)
    b[34:60, 30:62] = True
    base = truth.copy()
    both = blend(np.where((a | b)[..., None], completed, truth), base, a | b, cycles=8)
    alone_a = blend(np.where(a[..., None], completed, truth), base, a, cycles=8)
    alone_b = blend(np.where(b[..., None], completed, truth), base, b, cycles=8)
    np.testing.assert_allclose(both[a], alone_a[a], atol=2e-3)
    np.testing.assert_allclose(both[b], alone_b[b], atol=2e-3)


def test_ring_fill_fills_outer_rings_with_neighbour_means():
    image = np.zeros((1, 7, 7, 1), np.float32)
    image[0, :, 0] = 1.0  # left column known, value 1
    mask = np.ones((1, 7, 7, 1), np.float32)
    mask[0, :, 0] = 0.0
    filled, rest = fill.ring_fill(image, mask, 2)
    filled, rest = filled.numpy()[0, ..., 0], rest.numpy()[0, ..., 0]
    np.testing.assert_array_equal(rest[:, :3], 0.0)  # columns 1 and 2 filled
    np.testing.assert_array_equal(rest[:, 3:], 1.0)
    np.testing.assert_allclose(filled[:, 1], 1.0)  # the mean of one known neighbour
    np.testing.assert_allclose(filled[:, 2], 1.0)
    np.testing.assert_array_equal(filled[:, 3:], 0.0)


def test_postprocess_image_keeps_known_pixels_and_follows_the_box():
    truth = smooth_image(90, 70, seed=6)
    hole = np.zeros((90, 70, 1), np.float32)
    hole[0:20, 0:25] = 1.0  # the top-left corner
    hole[60:80, 40:62] = 1.0
    completed = np.where(hole > 0, np.clip(truth + 0.2, 0, 1), truth).astype(np.float32)
    out = poisson.postprocess_image(completed, hole).numpy()
    keep = np.broadcast_to(hole == 0, out.shape)
    np.testing.assert_array_equal(out[keep], completed[keep])
    whole = poisson.postprocess(completed[None], hole[None]).numpy()[0]
    np.testing.assert_allclose(out, whole, atol=0.01)  # the box only changes the pyramid
    # Most of the 0.2 offset is blended away.
    inside = hole[..., 0] > 0
    assert np.abs(out - truth)[inside].mean() < 0.4 * np.abs(completed - truth)[inside].mean()
    empty = np.zeros_like(hole)
    np.testing.assert_array_equal(poisson.postprocess_image(completed, empty).numpy(),
                                  completed)


def test_postprocess_runs_inside_dataset_map_and_a_traced_function():
    truth = smooth_image(40, 48, seed=7)
    hole = np.zeros((40, 48, 1), np.float32)
    hole[10:30, 12:40] = 1.0
    eager = poisson.postprocess_image(truth, hole).numpy()
    ds = tf.data.Dataset.from_tensors((truth, hole)).map(poisson.postprocess_image)
    np.testing.assert_allclose(next(iter(ds)).numpy(), eager, atol=1e-6)
    traced = tf.function(poisson.postprocess_image, input_signature=[
        tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None, 1])])
    np.testing.assert_allclose(traced(truth, hole).numpy(), eager, atol=1e-6)


def test_in_graph_close_to_opencv_on_a_completion_with_an_offset():
    """The whole path against postprocessing.postprocess (Telea + seamlessClone per hole)."""
    truth = (smooth_image(96, 96, seed=8) * 255).astype(np.uint8)
    hole = np.zeros((96, 96), bool)
    hole[20:60, 16:56] = True
    hole[70:90, 60:94] = True
    rng = np.random.default_rng(9)
    noisy = truth.astype(np.float32) + 30 + 4 * rng.standard_normal(truth.shape)
    completed = np.where(hole[..., None], np.clip(noisy, 0, 255), truth).astype(np.uint8)
    opencv = postprocessing.postprocess(completed, hole).astype(np.float64)
    ours = poisson.postprocess_image(completed.astype(np.float32) / 255,
                                     hole[..., None].astype(np.float32)).numpy() * 255
    l1 = {name: np.abs(x - truth)[hole].mean()
          for name, x in (("opencv", opencv), ("ours", ours), ("raw", completed))}
    # Both remove most of the offset (the real-photo comparison is in test_shipped.py).
    assert l1["opencv"] < 0.4 * l1["raw"] and l1["ours"] < 0.4 * l1["raw"], l1
    mse = np.mean((ours[hole] - opencv[hole]) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 30


def test_postprocess_image_solves_far_apart_holes_in_their_own_boxes():
    truth = smooth_image(120, 160, seed=10)
    hole = np.zeros((120, 160, 1), np.float32)
    hole[5:25, 5:30] = 1.0
    hole[90:115, 120:150] = 1.0
    completed = np.where(hole > 0, np.clip(truth + 0.1, 0, 1), truth).astype(np.float32)
    out = poisson.postprocess_image(completed, hole).numpy()
    m = poisson.MARGIN
    for y0, y1, x0, x1 in ((0, 25 + m, 0, 30 + m), (90 - m, 120, 120 - m, 150 + m)):
        alone = poisson.postprocess(completed[None, y0:y1, x0:x1],
                                    hole[None, y0:y1, x0:x1]).numpy()[0]
        np.testing.assert_allclose(out[y0:y1, x0:x1], alone, atol=1e-6)
    # Between the boxes nothing was touched.
    np.testing.assert_array_equal(out[40:80], completed[40:80])
