"""Full-resolution completion region by region (maxdim=0): plans, equality with a whole-image
pass, tiling, borders, post-processing on crops, errors. (The command line: tests/pipelines/
test_complete.py.)

Memory is measured by `python -m glcic_tf.benchmarks.large_image`, not here.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.config import ModelConfig
from glcic_tf.inference import postprocessing, regions
from glcic_tf.inference.completer import Completer
from glcic_tf.inference.images import CompletionError
from glcic_tf.inference.ops import keras_complete_fn
from glcic_tf.inference.regions import CONTEXT_MARGIN
from glcic_tf.networks import models

from helpers.inference import gradient_photo, holes

WIDTH = 1 / 16


@pytest.fixture(scope="module")
def complete_fn(tiny_run):
    _, config, model = tiny_run
    fn = tf.function(keras_complete_fn(model, config.data),
                     input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32),
                                      tf.TensorSpec([1, None, None, 1], tf.float32)])
    return lambda image, hole: fn(image, hole).numpy()


def photo(h, w, seed=0, dtype=np.uint8):
    """Smooth gradients plus noise, uint8 or float32 in [0, 1]."""
    return gradient_photo(h, w, seed=seed, noise=6.0, dtype=dtype)


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --- the receptive field sets the margin ----------------------------------------------------------

@pytest.mark.parametrize("padding", ["same", "torch"])
def test_receptive_field_reaches_at_most_context_margin_on_each_side(padding):
    # Positive kernels and a ones input, so that no gradient cancels out (as in test_models);
    # one batch element per pixel phase mod 4, since strided layers make the field off-centre.
    model = models.completion_network(WIDTH, ModelConfig(padding=padding))
    for w in model.weights:
        if w.path.endswith("kernel"):
            w.assign(tf.random.uniform(w.shape, 0.01, 1.0, seed=1))
    pre = keras.Model(model.inputs, model.get_layer("output_conv").output)
    size, centre = 352, 176
    image = tf.ones((4, size, size, 3))
    with tf.GradientTape() as tape:
        tape.watch(image)
        out = pre({"image": image, "mask": tf.ones((4, size, size, 1))}, training=False)
        y = tf.add_n([out[p, centre + p, centre + p, 0] for p in range(4)])
    grad = np.abs(tape.gradient(y, image).numpy()).sum(-1)
    reaches = []
    for phase in range(4):
        ys, xs = np.nonzero(grad[phase])
        c = centre + phase
        reaches += [c - ys.min(), ys.max() - c, c - xs.min(), xs.max() - c]
    # 147-153 px depending on phase and side: 153 is reached, never exceeded.
    assert max(reaches) == CONTEXT_MARGIN and min(reaches) >= 147, reaches


# --- plans ----------------------------------------------------------------------------------------

def test_far_holes_make_separate_regions_and_near_holes_merge():
    hole = holes((800, 800),
                 (100, 100, 130, 140),  # A
                 (100, 400, 120, 430),  # B: its context overlaps A's -> same region
                 (600, 620, 650, 700),  # C: far from everything
                 (790, 0, 800, 5))  # D: bottom-left corner
    plan = regions.plan_regions(hole)
    assert [(r.holes, r.num_components) for r in plan] == [
        ((100, 100, 130, 430), 2), ((600, 620, 650, 700), 1), ((790, 0, 800, 5), 1)]
    for region in plan:
        (tile,) = region.tiles
        y0, x0, y1, x1 = tile.crop
        hy0, hx0, hy1, hx1 = region.holes
        assert tile.keep == region.holes
        # At least CONTEXT_MARGIN of context on every side, or the image border.
        assert y0 <= hy0 - CONTEXT_MARGIN or y0 == 0
        assert x0 <= hx0 - CONTEXT_MARGIN or x0 == 0
        assert y1 >= hy1 + CONTEXT_MARGIN or y1 == 800
        assert x1 >= hx1 + CONTEXT_MARGIN or x1 == 800
        assert y0 % 4 == 0 and x0 % 4 == 0 and (y1 - y0) % 4 == 0 and (x1 - x0) % 4 == 0
        assert (y1 - y0) * (x1 - x0) < 800 * 800 / 3  # much less than the image
    assert plan[2].tiles[0].crop == (636, 0, 800, 160)
    crops = [r.crop for r in plan]
    assert not any(overlaps(a, b) for i, a in enumerate(crops) for b in crops[i + 1:])


def test_merging_repeats_until_no_merged_context_overlaps_another():
    # X and Y merge; only their union's context reaches Z.
    hole = holes((600, 600), (0, 0, 170, 10), (320, 100, 330, 310), (0, 400, 10, 410))
    assert [r.num_components for r in regions.plan_regions(hole)] == [3]
    assert len(regions.plan_regions(hole, margin=20)) == 3
    assert regions.plan_regions(np.zeros((50, 60), bool)) == []


def test_large_regions_are_tiled_within_the_pixel_budget():
    budget = 400 * 400
    hole = holes((480, 640), (120, 100, 360, 560))
    (region,) = regions.plan_regions(hole, max_pixels=budget)
    assert len(region.tiles) > 4
    covered = np.zeros_like(hole)
    for tile in region.tiles:
        h, w = tile.input_size
        assert h * w <= budget and h % 4 == 0 and w % 4 == 0
        ky0, kx0, ky1, kx1 = tile.keep
        assert not covered[ky0:ky1, kx0:kx1].any()  # keeps do not overlap
        covered[ky0:ky1, kx0:kx1] = True
        y0, x0, y1, x1 = tile.crop
        assert y0 <= max(0, ky0 - CONTEXT_MARGIN) and x0 <= max(0, kx0 - CONTEXT_MARGIN)
        assert y1 >= min(480, ky1 + CONTEXT_MARGIN) and x1 >= min(640, kx1 + CONTEXT_MARGIN)
    np.testing.assert_array_equal(covered & hole, hole)
    # A long thin region is cut along its length only, with full-height tiles.
    thin = holes((400, 1200), (190, 50, 210, 1150))
    (region,) = regions.plan_regions(thin, max_pixels=budget)
    assert len(region.tiles) > 1
    assert len({t.crop[0::2] for t in region.tiles}) == 1
    assert all(t.input_size[0] * t.input_size[1] <= budget for t in region.tiles)
    # Cores without hole pixels are skipped, the others shrink to their hole pixels.
    diagonal = np.eye(600, dtype=bool)
    (region,) = regions.plan_regions(diagonal, max_pixels=budget)
    cores_per_axis = -(-600 // (400 - 2 * 156))
    assert len(region.tiles) < cores_per_axis ** 2
    assert all(diagonal[t.keep[0]:t.keep[2], t.keep[1]:t.keep[3]].any() for t in region.tiles)


# --- equality with a whole-image pass -------------------------------------------------------------

def test_region_path_equals_a_whole_image_pass_inside_the_holes(complete_fn):
    image = photo(400, 640, seed=1, dtype=np.float32)
    # First/last rows and columns at every phase mod 4, and a hole in the top-right corner.
    hole = holes((400, 640), (181, 101, 222, 150), (0, 560, 30, 640))
    whole = complete_fn(image[None], hole[None, ..., None].astype(np.float32))[0]
    plan = regions.plan_regions(hole)
    assert len(plan) == 2 and all(
        (r.crop[2] - r.crop[0]) * (r.crop[3] - r.crop[1]) < 0.5 * 400 * 640 for r in plan)
    out = regions.complete_regions(image, hole, complete_fn)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[~hole], image[~hole])
    np.testing.assert_allclose(out[hole], np.clip(whole[hole], 0, 1), atol=1e-5, rtol=0)
    assert np.abs(out[hole] - image[hole]).max() > 0.3  # the holes were really completed
    # The margin is tight: 150 px (the centred radius) misses the 151st-153rd pixels right of
    # pixels at phase 1 mod 4, and 20 px changes the completion a lot.
    at_150 = regions.complete_regions(image, hole, complete_fn, margin=150)
    assert np.abs(at_150[hole] - whole[hole]).max() > 1e-4
    at_20 = regions.complete_regions(image, hole, complete_fn, margin=20)
    assert np.abs(at_20[hole] - whole[hole]).max() > 0.05


def test_tiles_equal_a_whole_image_pass_inside_the_hole(complete_fn):
    # Tiles keep only their core, which has CONTEXT_MARGIN px of context in its own crop, so
    # tiling is seamless: no blending, the same outputs as one pass.
    image = photo(480, 640, seed=2, dtype=np.float32)
    hole = holes((480, 640), (150, 150, 330, 420), (100, 500, 110, 520))
    whole = complete_fn(image[None], hole[None, ..., None].astype(np.float32))[0]
    (region,) = regions.plan_regions(hole, max_pixels=480 * 480)
    assert len(region.tiles) == 3 and region.num_components == 2
    out = regions.complete_regions(image, hole, complete_fn, max_pixels=480 * 480)
    np.testing.assert_array_equal(out[~hole], image[~hole])
    np.testing.assert_allclose(out[hole], np.clip(whole[hole], 0, 1), atol=1e-5, rtol=0)


def test_completer_maxdim_0_matches_the_whole_image_in_uint8(completer):
    image = photo(400, 640, seed=3)
    hole = holes((400, 640), (50, 60, 90, 130), (300, 500, 400, 560), (180, 300, 190, 330))
    whole = completer.complete(image, hole, postprocess=False, maxdim=640)  # no resizing
    raw = completer.complete(image, hole, postprocess=False, maxdim=0)
    assert raw.dtype == np.uint8 and raw.shape == image.shape
    np.testing.assert_array_equal(raw[~hole], image[~hole])
    assert np.abs(raw.astype(int) - whole).max() <= 1
    # Post-processing per region, on crops, is the same as on the whole image.
    post = completer.complete(image, hole, postprocess=True, maxdim=0)
    np.testing.assert_array_equal(post, postprocessing.postprocess(raw, hole))
    assert (post[hole] != raw[hole]).any()


def test_border_holes_on_an_odd_sized_image(completer):
    # 203x301: crops at the bottom/right borders are mirrored up to multiples of 4, hole and
    # image alike, so the content under the hole cannot leak into the completion.
    image = photo(203, 301, seed=4)
    hole = holes((203, 301), (190, 280, 203, 301), (0, 0, 203, 6), (100, 140, 120, 160))
    other = image.copy()
    other[hole] = 255 - other[hole]
    for postprocess in (False, True):
        out = completer.complete(image, hole, postprocess=postprocess, maxdim=0)
        assert out.shape == image.shape
        np.testing.assert_array_equal(out[~hole], image[~hole])
        assert (out[hole] != image[hole]).any(axis=-1).mean() > 0.5
        np.testing.assert_array_equal(
            completer.complete(other, hole, postprocess=postprocess, maxdim=0), out)
    sizes = [t.input_size for r in regions.plan_regions(hole) for t in r.tiles]
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in sizes)


def test_saved_model_completer_completes_by_regions_too(tiny_exports, completer):
    path = tiny_exports["fp32"]  # the export of the network `completer` runs
    image = photo(210, 330, seed=6)
    hole = holes((210, 330), (20, 20, 50, 60), (150, 290, 210, 330))
    got = Completer.from_path(path).complete(image, hole, maxdim=0)
    want = completer.complete(image, hole, maxdim=0)
    np.testing.assert_array_equal(got[~hole], image[~hole])
    assert np.abs(got.astype(int) - want).max() <= 1


def test_bad_arguments_are_rejected(completer, complete_fn):
    image = photo(40, 48)
    hole = holes((40, 48), (10, 10, 20, 20))
    with pytest.raises(CompletionError, match=r"maxdim must be >= 4, or 0 for full resolution, "
                                              r"got 2"):
        completer.complete(image, hole, maxdim=2)
    with pytest.raises(CompletionError, match=r"max_region_pixels must be an integer >= 99856 "
                                              r"\(a tile of side 316 px.*got 1000"):
        completer.complete(image, hole, maxdim=0, max_region_pixels=1000)
    with pytest.raises(CompletionError, match="context margin must be an integer >= 0, got -1"):
        regions.plan_regions(hole, margin=-1)
    with pytest.raises(CompletionError, match="post-processing needs a uint8 image"):
        regions.complete_regions((image / 255.0).astype(np.float32), hole, complete_fn,
                                 postprocess=True)
    with pytest.raises(CompletionError, match="uint8 or float32 image, got dtype float64"):
        regions.complete_regions(image / 255.0, hole, complete_fn)
    with pytest.raises(CompletionError, match=r"same size, got \(40, 48, 3\) and \(40, 40\)"):
        regions.complete_regions(image, hole[:, :40], complete_fn)
