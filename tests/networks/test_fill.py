"""Smooth hole fills in stock TF ops (glcic_tf/networks/fill.py), against an independent Laplace
solver."""

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf

from glcic_tf.networks import fill


def laplace_oracle(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Solves the discrete Laplace equation inside `hole` (4-neighbour, mirrored borders: a
    neighbour outside the image is the pixel itself) with the known pixels fixed, exactly."""
    h, w = hole.shape
    index = -np.ones((h, w), int)
    ys, xs = np.nonzero(hole)
    index[ys, xs] = np.arange(len(ys))
    n = len(ys)
    a = scipy.sparse.lil_matrix((n, n))
    out = image.astype(np.float64).copy()
    rhs = np.zeros((n, image.shape[-1]))
    for k, (y, x) in enumerate(zip(ys, xs)):
        a[k, k] = 4.0
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            ny, nx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
            if hole[ny, nx]:
                a[k, index[ny, nx]] -= 1.0
            else:
                rhs[k] += image[ny, nx]
    solution = scipy.sparse.linalg.spsolve(a.tocsr(), rhs)
    out[ys, xs] = solution.reshape(n, -1)
    return out


@pytest.fixture(scope="module")
def photo_like():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:40] / 40.0
    image = np.stack([0.5 + 0.3 * np.sin(3 * yy + 1), 0.4 + 0.2 * np.cos(4 * xx),
                      0.3 + 0.2 * yy * xx], -1) + rng.normal(0, 0.02, (48, 40, 3))
    hole = np.zeros((48, 40), bool)
    hole[10:30, 6:22] = True
    hole[40:48, 30:40] = True  # touches two borders
    return image.astype(np.float32), hole


def _run(fn, image, hole, **kwargs):
    return fn(tf.constant(image[None]), tf.constant(hole[None, ..., None], tf.float32),
              **kwargs).numpy()[0]


def test_harmonic_fill_matches_an_exact_laplace_solve(photo_like):
    image, hole = photo_like
    want = laplace_oracle(image, hole)
    got = _run(fill.harmonic_fill, image, hole, iterations=300)
    assert np.abs(got - want)[hole].max() < 2e-3
    # The default (24 sweeps a level) is close too: within 2% of the value range.
    default = _run(fill.harmonic_fill, image, hole)
    assert np.abs(default - want)[hole].max() < 0.02
    # Push-pull alone is a coarser approximation, and still bounded by the known values.
    pushed = _run(fill.push_pull_fill, image, hole)
    assert np.abs(pushed - want)[hole].mean() > np.abs(default - want)[hole].mean()


def test_known_pixels_are_untouched_and_the_fill_obeys_the_maximum_principle(photo_like):
    image, hole = photo_like
    out = _run(fill.harmonic_fill, image, hole)
    np.testing.assert_array_equal(out[~hole], image[~hole])
    known = image[~hole]
    assert (out[hole] >= known.min(0) - 1e-6).all() and (out[hole] <= known.max(0) + 1e-6).all()


def test_a_linear_ramp_is_reproduced():
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    ramp = np.repeat((0.2 + 0.01 * yy + 0.005 * xx)[..., None], 3, -1)
    hole = np.zeros((32, 32), bool)
    hole[8:24, 10:26] = True
    out = _run(fill.harmonic_fill, ramp, hole, iterations=200)
    assert np.abs(out - ramp)[hole].max() < 2e-3


def test_no_known_pixel_gives_grey_and_a_constant_image_stays_constant():
    everything = np.ones((16, 16), bool)
    out = _run(fill.harmonic_fill, np.zeros((16, 16, 3), np.float32), everything)
    np.testing.assert_allclose(out, 0.5)
    hole = np.zeros((16, 16), bool)
    hole[4:12, 4:12] = True
    out = _run(fill.harmonic_fill, np.full((16, 16, 3), 0.3, np.float32), hole)
    np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_same_result_eagerly_and_inside_dataset_map(photo_like):
    image, hole = photo_like
    eager = _run(fill.harmonic_fill, image, hole)
    ds = tf.data.Dataset.from_tensors((image[None], hole[None, ..., None].astype(np.float32)))
    graph = next(iter(ds.map(lambda i, m: fill.harmonic_fill(i, m))))[0].numpy()
    np.testing.assert_allclose(eager, graph, atol=1e-6)


def test_odd_sizes_and_batches_keep_their_shape():
    rng = np.random.default_rng(1)
    image = rng.random((3, 37, 53, 3)).astype(np.float32)
    mask = (rng.random((3, 37, 53, 1)) > 0.8).astype(np.float32)
    out = fill.harmonic_fill(image, mask).numpy()
    assert out.shape == image.shape and np.isfinite(out).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="iterations"):
        fill.harmonic_fill(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 1)), -1)
    with pytest.raises(ValueError, match="levels"):
        fill.harmonic_fill(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 1)),
                           levels=0)
