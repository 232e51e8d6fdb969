"""Completing images: sizes, exact pixels outside holes, post-processing per hole, masks, CLI."""

from pipeline_scripts import load_pipeline
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf import completion, masks, models, runs
from glcic_tf.benchmarks.completion import he_normal_weights
from glcic_tf.completion import CompletionError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 1 / 16


def make_run_dir(path, width=WIDTH, seed=0, step=123):
    """A training run dir as training writes it: config.json + a CheckpointManager checkpoint."""
    from glcic_tf.config import get_preset

    config = get_preset("tiny").override({"model.width": width})
    keras.utils.set_random_seed(seed)
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed)
    runs.save_completion_run(path, config, model, step=step)
    return config, model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("run"))
    config, model = make_run_dir(path)
    return path, config, model


@pytest.fixture(scope="module")
def completer(run_dir):
    _, config, model = run_dir
    return completion.Completer.from_model(config, model)


def smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 180 + 30
    return np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def keras_composite_u8(model, config, image_u8, hole):
    x = image_u8[None].astype(np.float32) / 255.0
    m = hole[None, ..., None].astype(np.float32)
    out = masks.composite(model(masks.network_inputs(x, m, config.data), training=False), x, m)
    return np.round(np.clip(out.numpy()[0], 0, 1) * 255).astype(np.uint8)


def save_png(path, array, mode=None):
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)
    return str(path)


# --- sizes ---------------------------------------------------------------------------------------

def test_network_size_rounds_like_the_official_tool():
    assert completion.network_size(301, 203) == (300, 204)  # round(x / 4) * 4
    assert completion.network_size(64, 64) == (64, 64)
    assert completion.network_size(2, 1) == (4, 4)  # never below 4
    assert completion.network_size(1000, 600) == (500, 300)  # long side scaled to maxdim
    assert completion.network_size(600, 1001, maxdim=500) == (300, 500)
    assert completion.network_size(3000, 30, maxdim=500) == (500, 4)
    with pytest.raises(CompletionError, match="maxdim must be >= 4"):
        completion.network_size(10, 10, maxdim=2)


def test_network_size_tensorflow_matches_python():
    for h, w, maxdim in [(301, 203, 500), (1000, 600, 500), (2, 1, 500), (999, 501, 500),
                         (37, 51, 40), (6, 10, 500), (1234, 4321, 777)]:
        th, tw = completion._network_size_tf(tf.constant(h), tf.constant(w), maxdim)
        assert (int(th), int(tw)) == completion.network_size(h, w, maxdim), (h, w, maxdim)


# --- completing -----------------------------------------------------------------------------------

def test_matches_keras_composite_when_no_resizing_is_needed(run_dir, completer):
    _, config, model = run_dir
    image = smooth_image(48, 64)
    hole = np.zeros((48, 64), bool)
    hole[10:30, 20:44] = True
    out = completer.complete(image, hole, postprocess=False)
    np.testing.assert_array_equal(out, keras_composite_u8(model, config, image, hole))
    assert (out[hole] != image[hole]).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("maxdim", [500, 64])
def test_odd_size_and_downscaling_keep_size_and_pixels_outside_the_hole(completer, maxdim):
    image = smooth_image(301, 203, seed=1)
    hole = np.zeros((301, 203), bool)
    hole[100:160, 50:120] = True
    hole[3, 7] = True  # a one-pixel hole must be completed too, even when downscaled
    out = completer.complete(image, hole, postprocess=False, maxdim=maxdim)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert (out[hole] != image[hole]).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("maxdim", [None, 0])
def test_in_graph_postprocess_is_the_poisson_module_on_the_composite(completer, maxdim):
    from glcic_tf import poisson

    image = smooth_image(64, 96, seed=3)
    hole = np.zeros((64, 96), bool)
    hole[8:30, 10:40] = True
    hole[44:64, 60:96] = True  # touches the bottom and right borders
    raw = completer.complete(image, hole, postprocess="none", maxdim=maxdim)
    post = completer.complete(image, hole, postprocess="in-graph", maxdim=maxdim)
    np.testing.assert_array_equal(post[~hole], image[~hole])
    want = poisson.postprocess_image(raw.astype(np.float32) / 255,
                                     hole[..., None].astype(np.float32)).numpy()
    want = np.round(want * 255)
    # maxdim=0 post-processes the 8-bit composite, the other path the float one: 1 level.
    assert np.abs(post.astype(int) - want).max() <= 1
    assert (post[hole] != raw[hole]).any(axis=-1).mean() > 0.3


def test_postprocess_changes_only_hole_pixels_and_blends_each_hole(completer):
    image = smooth_image(64, 96, seed=2)
    hole = np.zeros((64, 96), bool)
    hole[8:24, 10:30] = True  # interior
    hole[40:56, 50:70] = True  # interior, far from the first
    hole[50:64, 0:12] = True  # touches the left and bottom borders
    raw = completer.complete(image, hole, postprocess=False)
    post = completer.complete(image, hole, postprocess=True)
    np.testing.assert_array_equal(post[~hole], image[~hole])
    count, labels = cv2.connectedComponents(hole.astype(np.uint8))
    assert count - 1 == 3
    for label in range(1, count):
        region = labels == label
        changed = (post[region] != raw[region]).any(axis=-1).mean()
        assert changed > 0.3, (label, changed)


def test_poisson_blending_pulls_each_hole_to_its_own_surroundings():
    # Flat, wrongly coloured completions in three holes (one in a corner) on a smooth
    # background: NORMAL_CLONE keeps the (zero) gradients and takes each hole's colour from its
    # own boundary, so every hole ends close to the background around it.
    image = smooth_image(72, 96, seed=3)
    hole = np.zeros((72, 96), bool)
    boxes = [(slice(8, 24), slice(10, 30)), (slice(40, 60), slice(60, 84)),
             (slice(0, 14), slice(82, 96))]
    completed = image.copy()
    for (ys, xs), colour in zip(boxes, [(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        hole[ys, xs] = True
        completed[ys, xs] = colour
    out = completion.postprocess(completed, hole)
    np.testing.assert_array_equal(out[~hole], image[~hole])
    for ys, xs in boxes:
        before = np.abs(completed[ys, xs].astype(int) - image[ys, xs]).mean()
        after = np.abs(out[ys, xs].astype(int) - image[ys, xs]).mean()
        assert before > 60 and after < 12, (ys, xs, before, after)


def test_postprocess_handles_a_hole_covering_a_whole_border_row():
    image = smooth_image(40, 40, seed=4)
    hole = np.zeros((40, 40), bool)
    hole[0:6, :] = True
    completed = image.copy()
    completed[hole] = 250
    out = completion.postprocess(completed, hole)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.abs(out[hole].astype(int) - image[hole]).mean() < 25


# --- folded batch norm ---------------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["same", "torch"])
def test_folded_network_matches_the_keras_model(padding):
    from glcic_tf.benchmarks.completion import psnr
    from glcic_tf.config import get_preset

    config = get_preset("tiny").override({"model.width": WIDTH, "model.padding": padding})
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed=1)
    rng = np.random.default_rng(0)
    x = {"image": rng.random((2, 36, 44, 3)).astype(np.float32),
         "mask": (rng.random((2, 36, 44, 1)) > 0.5).astype(np.float32)}
    want = model(x, training=False).numpy()
    assert want.std() > 0.05  # outputs vary, so the comparison means something
    folded = completion.fold_batch_norm(model)
    assert isinstance(folded, completion.FoldedNetwork)
    assert len(folded.variables) == 2 * 17  # one kernel and one bias per convolution
    np.testing.assert_allclose(folded(x).numpy(), want, atol=1e-4)
    bf16 = completion.fold_batch_norm(model, "bfloat16")
    assert bf16.variables[0].dtype == tf.float32  # conv1 stays float32
    assert bf16.variables[4].dtype == tf.bfloat16  # conv3
    assert psnr(bf16(x).numpy(), want) > 35


def test_fold_falls_back_to_keras_for_unknown_layers(caplog):
    image = keras.Input((None, None, 3), name="image")
    mask = keras.Input((None, None, 1), name="mask")
    x = keras.layers.Concatenate()([image, mask])
    x = keras.layers.Conv2D(3, 3, padding="same")(x)
    x = keras.layers.LayerNormalization()(x)
    model = keras.Model({"image": image, "mask": mask}, x)
    assert completion.fold_batch_norm(model) is model
    assert "batch norm not folded" in caplog.text and "LayerNormalization" in caplog.text


def test_bfloat16_keeps_the_documented_layers_in_float32(run_dir):
    _, config, model = run_dir
    names = [name for name, *_ in models.COMPLETION_LAYERS]
    mixed = ("conv1", "conv2", "conv10", "output_conv")
    assert completion.BFLOAT16_FLOAT32_LAYERS == mixed
    # The module docstring's table marks the default row with its float32 layers.
    row = next(line for line in completion.__doc__.splitlines() if "<- default" in line)
    assert row.strip().split("  ")[0].split(", ") == list(mixed)
    folded = completion.fold_batch_norm(model, "bfloat16")
    assert folded.layer_dtypes == {n: "float32" if n in mixed else "bfloat16" for n in names}
    kernels = [v.dtype.name for v in folded.variables[0::2]]
    biases = [v.dtype.name for v in folded.variables[1::2]]
    assert kernels == biases == [folded.layer_dtypes[n] for n in names]
    all_bf16 = completion.fold_batch_norm(model, "bfloat16", float32_layers=())
    assert set(all_bf16.layer_dtypes.values()) == {"bfloat16"}
    assert set(completion.fold_batch_norm(model).layer_dtypes.values()) == {"float32"}
    with pytest.raises(ValueError, match=r"float32_layers: \['conv99'\] are not convolutions"):
        completion.fold_batch_norm(model, "bfloat16", float32_layers=("conv1", "conv99"))
    completer = completion.Completer.from_model(config, model, precision="bfloat16")
    assert completer.precision == "bfloat16"
    with pytest.raises(CompletionError, match="precision must be float32 or bfloat16"):
        completion.Completer.from_model(config, model, precision="float16")


def test_bfloat16_completion_is_close_to_float32(run_dir):
    from glcic_tf.benchmarks.completion import psnr

    _, config, model = run_dir
    rng = np.random.default_rng(0)
    x = {"image": rng.random((1, 64, 64, 3)).astype(np.float32),
         "mask": (rng.random((1, 64, 64, 1)) > 0.5).astype(np.float32)}
    want = model(x, training=False).numpy()
    assert want.std() > 0.05
    mixed = psnr(completion.fold_batch_norm(model, "bfloat16")(x).numpy(), want)
    all_bf16 = psnr(completion.fold_batch_norm(model, "bfloat16", float32_layers=())(x).numpy(),
                    want)
    # Width 1/16 (16x fewer channels than the paper's): ~42.5 and ~40.7 dB; at full width and
    # 512x512, 40.8 and 39.3 dB (see the module docstring).
    assert mixed > 39.0 and mixed > all_bf16
    image = smooth_image(64, 72)
    hole = np.zeros((64, 72), bool)
    hole[12:44, 20:60] = True
    fp32 = completion.Completer.from_model(config, model).complete(image, hole, postprocess=False)
    bf16 = completion.Completer.from_model(config, model, precision="bfloat16").complete(
        image, hole, postprocess=False)
    np.testing.assert_array_equal(bf16[~hole], image[~hole])
    assert psnr(bf16[hole] / 255.0, fp32[hole] / 255.0) > 36.0


# --- masks and errors -----------------------------------------------------------------------------

def test_gray_rgb_rgba_la_and_palette_masks_give_the_same_hole(tmp_path, completer):
    hole = np.zeros((32, 40), bool)
    hole[4:20, 8:30] = True
    white = np.where(hole, 255, 0).astype(np.uint8)
    files = {
        "gray": save_png(tmp_path / "gray.png", white),
        "rgb": save_png(tmp_path / "rgb.png", np.repeat(white[..., None], 3, -1)),
        # white strokes on a transparent layer (colour under transparent pixels is white too)
        "rgba": save_png(tmp_path / "rgba.png", np.dstack([np.full((32, 40, 3), 255, np.uint8),
                                                           white])),
        "la": save_png(tmp_path / "la.png", np.dstack([np.full((32, 40), 255, np.uint8),
                                                       white]), "LA"),
    }
    Image.fromarray(white).convert("P").save(tmp_path / "p.png")
    files["palette"] = str(tmp_path / "p.png")
    image = smooth_image(32, 40)
    reference = completer.complete(image, hole, postprocess=False)
    for name, path in files.items():
        mask = completion.load_mask(path)
        assert mask.shape == (32, 40) and mask.dtype == np.float32, name
        np.testing.assert_array_equal(mask >= completion.HOLE_THRESHOLD, hole, err_msg=name)
        np.testing.assert_array_equal(completer.complete(image, mask, postprocess=False),
                                      reference, err_msg=name)


def test_errors_name_the_file_and_the_problem(tmp_path, completer):
    image_path = save_png(tmp_path / "photo.png", smooth_image(32, 40))
    empty = save_png(tmp_path / "empty.png", np.zeros((32, 40), np.uint8))
    small = save_png(tmp_path / "small.png", np.full((30, 40), 255, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    out = str(tmp_path / "out.png")
    with pytest.raises(CompletionError, match=r"empty\.png: empty mask"):
        completion.complete_files(completer, image_path, empty, out)
    with pytest.raises(CompletionError, match=r"small\.png: mask size 40x30 \(WxH\) differs "
                                              r"from image size 40x32 of .*photo\.png"):
        completion.complete_files(completer, image_path, small, out)
    with pytest.raises(CompletionError, match=r"broken\.png: cannot read image"):
        completion.complete_files(completer, str(broken), empty, out)
    with pytest.raises(CompletionError, match=r"missing\.png: mask file not found"):
        completion.complete_files(completer, image_path, str(tmp_path / "missing.png"), out)
    with pytest.raises(CompletionError, match="empty mask"):
        completer.complete(smooth_image(8, 8), np.zeros((8, 8)))
    with pytest.raises(CompletionError, match="differs from image size"):
        completer.complete(smooth_image(8, 8), np.ones((8, 9)))
    assert not os.path.exists(out)
    with pytest.raises(CompletionError, match="not a training run dir"):
        completion.Completer.from_path(str(tmp_path))


def test_random_holes_follow_the_official_tool_and_are_seeded():
    a = completion.random_holes(300, 400, np.random.default_rng(5))
    b = completion.random_holes(300, 400, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    for seed in range(20):
        hole = completion.random_holes(300, 400, np.random.default_rng(seed))
        assert 32 * 32 <= hole.sum() <= 4 * 128 * 128
        _, _, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8))
        assert 1 <= len(stats) - 1 <= 4  # rectangles may overlap
        assert stats[1:, 2].min() >= 32 and stats[1:, 3].min() >= 32
    tiny = completion.random_holes(20, 24, np.random.default_rng(0))
    assert tiny.shape == (20, 24) and tiny.any() and not tiny.all()


def test_default_maxdim_follows_the_training_scale(run_dir):
    from glcic_tf.config import get_preset

    assert completion.default_maxdim(get_preset("paper")) == 500
    assert completion.default_maxdim(get_preset("photos128")) == 252
    _, config, model = run_dir
    completer = completion.Completer.from_model(config, model)
    assert completer.default_maxdim == completion.default_maxdim(config) == 124
    image = smooth_image(150, 300)
    hole = np.zeros((150, 300), bool)
    hole[60:80, 100:130] = True
    # maxdim=None is the model's default: identical to asking for it explicitly.
    np.testing.assert_array_equal(completer.complete(image, hole, postprocess=False),
                                  completer.complete(image, hole, postprocess=False, maxdim=124))


def test_random_holes_scale_with_the_model():
    from glcic_tf.config import get_preset

    class Fake:
        config = get_preset("photos128")
        default_maxdim = 252

    assert completion._random_hole_size(Fake, (200, 250), None) == (16, 64)
    assert completion._random_hole_size(Fake, (400, 504), None) == (32, 128)  # 2x the scale
    Fake.config = None
    assert completion._random_hole_size(Fake, (400, 504), None) == completion.RANDOM_HOLE_SIZE


def test_scale_warning_names_the_problem(run_dir):
    _, config, model = run_dir  # the tiny preset: 64 px crops of images resized to 64-96 px
    assert completion.scale_warning(config, 96, 120, (20, 20)) is None
    message = completion.scale_warning(config, 328, 492, (200, 150), name="photo.png")
    assert message.startswith("photo.png: ") and "328 px" in message and "200 px" in message
    assert "--maxdim 124" in message
    warnings = []
    completer = completion.Completer.from_model(config, model)
    completer.warn = warnings.append
    image = smooth_image(328, 492)
    hole = np.zeros((328, 492), bool)
    hole[50:250, 100:250] = True
    completer.complete(image, hole, postprocess=False, maxdim=500)
    assert len(warnings) == 1 and "far outside its training scale" in warnings[0]
    completer.complete(image, hole, postprocess=False)  # default maxdim 124: within scale
    assert len(warnings) == 1


# --- command line ---------------------------------------------------------------------------------

def _load_cli():
    return load_pipeline("complete")


def test_cli_completes_a_folder_with_a_folder_of_masks(tmp_path, run_dir):
    path, _, _ = run_dir
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    sizes = {"a": (37, 53), "b": (64, 48)}
    holes = {}
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        save_png(tmp_path / "images" / f"{stem}.png", smooth_image(h, w, seed=i))
        hole = np.zeros((h, w), bool)
        hole[5:25, 10:30] = True
        holes[stem] = hole
    save_png(tmp_path / "masks" / "a.png", np.where(holes["a"], 255, 0).astype(np.uint8))
    rgba = np.zeros((64, 48, 4), np.uint8)
    rgba[holes["b"]] = 255
    save_png(tmp_path / "masks" / "b.png", rgba)
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "complete.py"), "--model", path,
         "--image", str(tmp_path / "images"), "--mask", str(tmp_path / "masks"),
         "--out", str(out_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out_dir)) == ["a.png", "b.png"]
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        out = np.asarray(Image.open(out_dir / f"{stem}.png"))
        assert out.shape == (h, w, 3)
        np.testing.assert_array_equal(out[~holes[stem]], smooth_image(h, w, seed=i)[~holes[stem]])


def test_cli_random_holes_write_the_mask_and_are_seeded(tmp_path, run_dir):
    path, _, _ = run_dir
    cli = _load_cli()
    image_path = save_png(tmp_path / "in.png", smooth_image(150, 170))
    outs = []
    for name in ("one", "two"):
        out = str(tmp_path / f"{name}.png")
        assert cli.main(cli.parse_args(["--model", path, "--image", image_path, "--out", out,
                                        "--seed", "3", "--no-postprocess"])) == 0
        mask = np.asarray(Image.open(tmp_path / f"{name}_mask.png")) > 0
        assert mask.shape == (150, 170) and 0 < mask.sum() < mask.size
        outs.append((np.asarray(Image.open(out)), mask))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    image = smooth_image(150, 170)
    np.testing.assert_array_equal(outs[0][0][~outs[0][1]], image[~outs[0][1]])


def test_cli_errors_exit_nonzero_with_one_line(tmp_path, run_dir, capsys):
    path, _, _ = run_dir
    cli = _load_cli()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    save_png(tmp_path / "images" / "cat.png", smooth_image(32, 32))
    code = cli.main(cli.parse_args(["--model", path, "--image", str(tmp_path / "images"),
                                    "--mask", str(tmp_path / "masks"),
                                    "--out", str(tmp_path / "out")]))
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and "cat.png: no mask for this image" in err
    code = cli.main(cli.parse_args(["--model", str(tmp_path / "nope"), "--image", "x.png",
                                    "--out", "y.png"]))
    assert code == 1 and "model directory not found" in capsys.readouterr().err


def test_cli_precision_bfloat16_completes_a_run_dir(tmp_path, run_dir, capsys):
    from glcic_tf.benchmarks.completion import psnr

    path, _, _ = run_dir
    cli = _load_cli()
    image = smooth_image(60, 76)
    hole = np.zeros((60, 76), bool)
    hole[10:40, 20:56] = True
    image_path = save_png(tmp_path / "in.png", image)
    mask_path = save_png(tmp_path / "mask.png", np.where(hole, 255, 0).astype(np.uint8))
    outs = {}
    for precision in ("float32", "bfloat16"):
        out = str(tmp_path / f"{precision}.png")
        assert cli.main(cli.parse_args(["--model", path, "--image", image_path, "--mask",
                                        mask_path, "--out", out, "--no-postprocess",
                                        "--precision", precision])) == 0
        outs[precision] = np.asarray(Image.open(out))
    np.testing.assert_array_equal(outs["bfloat16"][~hole], image[~hole])
    assert not np.array_equal(outs["bfloat16"], outs["float32"])  # bf16 really ran
    assert psnr(outs["bfloat16"][hole] / 255.0, outs["float32"][hole] / 255.0) > 36.0
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", path, "--image", image_path, "--out", "o.png",
                        "--precision", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err
