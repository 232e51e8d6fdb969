"""Full-resolution completion region by region (maxdim=0): plans, equality with a whole-image
pass, tiling, borders, post-processing on crops, errors and the CLI.

Memory is measured by `python -m glcic_tf.benchmarks.large_image`, not here.
"""

from pipeline_scripts import load_pipeline
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf import completion, models, runs
from glcic_tf.benchmarks.completion import he_normal_weights
from glcic_tf.completion import CONTEXT_MARGIN, CompletionError
from glcic_tf.config import ModelConfig, get_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16


@pytest.fixture(scope="module")
def network():
    config = get_preset("tiny").override({"model.width": WIDTH})
    keras.utils.set_random_seed(0)
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed=0)
    return config, model


@pytest.fixture(scope="module")
def complete_fn(network):
    config, model = network
    fn = tf.function(completion.keras_complete_fn(model, config.data),
                     input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32),
                                      tf.TensorSpec([1, None, None, 1], tf.float32)])
    return lambda image, hole: fn(image, hole).numpy()


@pytest.fixture(scope="module")
def completer(network):
    config, model = network
    return completion.Completer.from_model(config, model)


def photo(h, w, seed=0, dtype=np.uint8):
    """Smooth gradients plus noise, uint8 or float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 180 + 30
    image = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    return image if dtype == np.uint8 else (image / 255.0).astype(np.float32)


def holes(shape, *boxes):
    hole = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        hole[y0:y1, x0:x1] = True
    return hole


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
    regions = completion.plan_regions(hole)
    assert [(r.holes, r.num_components) for r in regions] == [
        ((100, 100, 130, 430), 2), ((600, 620, 650, 700), 1), ((790, 0, 800, 5), 1)]
    for region in regions:
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
    assert regions[2].tiles[0].crop == (636, 0, 800, 160)
    crops = [r.crop for r in regions]
    assert not any(overlaps(a, b) for i, a in enumerate(crops) for b in crops[i + 1:])


def test_merging_repeats_until_no_merged_context_overlaps_another():
    # X and Y merge; only their union's context reaches Z.
    hole = holes((600, 600), (0, 0, 170, 10), (320, 100, 330, 310), (0, 400, 10, 410))
    assert [r.num_components for r in completion.plan_regions(hole)] == [3]
    assert len(completion.plan_regions(hole, margin=20)) == 3
    assert completion.plan_regions(np.zeros((50, 60), bool)) == []


def test_large_regions_are_tiled_within_the_pixel_budget():
    budget = 400 * 400
    hole = holes((480, 640), (120, 100, 360, 560))
    (region,) = completion.plan_regions(hole, max_pixels=budget)
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
    (region,) = completion.plan_regions(thin, max_pixels=budget)
    assert len(region.tiles) > 1
    assert len({t.crop[0::2] for t in region.tiles}) == 1
    assert all(t.input_size[0] * t.input_size[1] <= budget for t in region.tiles)
    # Cores without hole pixels are skipped, the others shrink to their hole pixels.
    diagonal = np.eye(600, dtype=bool)
    (region,) = completion.plan_regions(diagonal, max_pixels=budget)
    cores_per_axis = -(-600 // (400 - 2 * 156))
    assert len(region.tiles) < cores_per_axis ** 2
    assert all(diagonal[t.keep[0]:t.keep[2], t.keep[1]:t.keep[3]].any() for t in region.tiles)


# --- equality with a whole-image pass -------------------------------------------------------------

def test_region_path_equals_a_whole_image_pass_inside_the_holes(complete_fn):
    image = photo(400, 640, seed=1, dtype=np.float32)
    # First/last rows and columns at every phase mod 4, and a hole in the top-right corner.
    hole = holes((400, 640), (181, 101, 222, 150), (0, 560, 30, 640))
    whole = complete_fn(image[None], hole[None, ..., None].astype(np.float32))[0]
    regions = completion.plan_regions(hole)
    assert len(regions) == 2 and all(
        (r.crop[2] - r.crop[0]) * (r.crop[3] - r.crop[1]) < 0.5 * 400 * 640 for r in regions)
    out = completion.complete_regions(image, hole, complete_fn)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[~hole], image[~hole])
    np.testing.assert_allclose(out[hole], np.clip(whole[hole], 0, 1), atol=1e-5, rtol=0)
    assert np.abs(out[hole] - image[hole]).max() > 0.3  # the holes were really completed
    # The margin is tight: 150 px (the centred radius) misses the 151st-153rd pixels right of
    # pixels at phase 1 mod 4, and 20 px changes the completion a lot.
    at_150 = completion.complete_regions(image, hole, complete_fn, margin=150)
    assert np.abs(at_150[hole] - whole[hole]).max() > 1e-4
    at_20 = completion.complete_regions(image, hole, complete_fn, margin=20)
    assert np.abs(at_20[hole] - whole[hole]).max() > 0.05


def test_tiles_equal_a_whole_image_pass_inside_the_hole(complete_fn):
    # Tiles keep only their core, which has CONTEXT_MARGIN px of context in its own crop, so
    # tiling is seamless: no blending, the same outputs as one pass.
    image = photo(480, 640, seed=2, dtype=np.float32)
    hole = holes((480, 640), (150, 150, 330, 420), (100, 500, 110, 520))
    whole = complete_fn(image[None], hole[None, ..., None].astype(np.float32))[0]
    (region,) = completion.plan_regions(hole, max_pixels=480 * 480)
    assert len(region.tiles) == 3 and region.num_components == 2
    out = completion.complete_regions(image, hole, complete_fn, max_pixels=480 * 480)
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
    np.testing.assert_array_equal(post, completion.postprocess(raw, hole))
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
    sizes = [t.input_size for r in completion.plan_regions(hole) for t in r.tiles]
    assert all(h % 4 == 0 and w % 4 == 0 for h, w in sizes)


def test_saved_model_completer_completes_by_regions_too(tmp_path, network, completer):
    from glcic_tf import export

    config, model = network
    path = export.export_saved_model(model, config, str(tmp_path / "glcic"))
    image = photo(210, 330, seed=6)
    hole = holes((210, 330), (20, 20, 50, 60), (150, 290, 210, 330))
    got = completion.Completer.from_path(path).complete(image, hole, maxdim=0)
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
        completion.plan_regions(hole, margin=-1)
    with pytest.raises(CompletionError, match="post-processing needs a uint8 image"):
        completion.complete_regions((image / 255.0).astype(np.float32), hole, complete_fn,
                                    postprocess=True)
    with pytest.raises(CompletionError, match="uint8 or float32 image, got dtype float64"):
        completion.complete_regions(image / 255.0, hole, complete_fn)
    with pytest.raises(CompletionError, match=r"same size, got \(40, 48, 3\) and \(40, 40\)"):
        completion.complete_regions(image, hole[:, :40], complete_fn)


# --- command line ---------------------------------------------------------------------------------

def _load_cli():
    return load_pipeline("complete")


def test_cli_maxdim_0_completes_at_full_resolution(tmp_path, network):
    config, model = network
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    config.save(runs.config_path(run_dir))
    ckpt = tf.train.Checkpoint(step=tf.Variable(7, dtype=tf.int64), completion=model)
    tf.train.CheckpointManager(ckpt, runs.checkpoint_dir(run_dir), max_to_keep=1).save(
        checkpoint_number=7)
    image = photo(330, 250, seed=5)
    hole = holes((330, 250), (20, 30, 60, 90), (300, 200, 330, 250))
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "complete.py"), "--model", run_dir,
         "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
         "--out", str(out), "--maxdim", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = np.asarray(Image.open(out))
    assert result.shape == (330, 250, 3)
    np.testing.assert_array_equal(result[~hole], image[~hole])
    want = completion.Completer.from_model(config, model).complete(image, hole, maxdim=0)
    assert np.abs(result.astype(int) - want).max() <= 1


def test_cli_rejects_a_budget_too_small_for_the_margin(capsys):
    cli = _load_cli()
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "m", "--image", "i.png", "--out", "o.png", "--maxdim", "0",
                        "--max-region-pixels", "5000"])
    assert "max_region_pixels must be an integer >= 99856" in capsys.readouterr().err
    args = cli.parse_args(["--model", "m", "--image", "i.png", "--out", "o.png", "--maxdim", "0",
                           "--context-margin", "20", "--max-region-pixels", "5000"])
    assert args.maxdim == 0 and args.context_margin == 20
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "m", "--image", "i.png", "--out", "o.png", "--maxdim", "3"])
