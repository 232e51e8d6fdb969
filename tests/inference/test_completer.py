"""The Completer: the Keras composite bit for bit when no resizing is needed, sizes and pixels
outside the hole kept, bfloat16, and SavedModels (their `complete` signature and precision)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf.benchmarks.completion import psnr
from glcic_tf.inference.completer import Completer
from glcic_tf.inference.images import CompletionError
from glcic_tf.networks import folding

from helpers.inference import gradient_photo, keras_composite_u8
from helpers.runs import STEP
from helpers.scripts import load_pipeline


def test_matches_keras_composite_when_no_resizing_is_needed(tiny_run, completer):
    _, config, model = tiny_run
    image = gradient_photo(48, 64)
    hole = np.zeros((48, 64), bool)
    hole[10:30, 20:44] = True
    out = completer.complete(image, hole, postprocess=False)
    np.testing.assert_array_equal(out, keras_composite_u8(model, config, image, hole))
    assert (out[hole] != image[hole]).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("maxdim", [500, 64])
def test_odd_size_and_downscaling_keep_size_and_pixels_outside_the_hole(completer, maxdim):
    image = gradient_photo(301, 203, seed=1)
    hole = np.zeros((301, 203), bool)
    hole[100:160, 50:120] = True
    hole[3, 7] = True  # a one-pixel hole must be completed too, even when downscaled
    out = completer.complete(image, hole, postprocess=False, maxdim=maxdim)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert (out[hole] != image[hole]).any(axis=-1).mean() > 0.5


def test_bfloat16_precision_is_recorded_and_checked(tiny_run):
    _, config, model = tiny_run
    completer = Completer.from_model(config, model, precision="bfloat16")
    assert completer.precision == "bfloat16"
    with pytest.raises(CompletionError, match="precision must be float32 or bfloat16"):
        Completer.from_model(config, model, precision="float16")


def test_bfloat16_completion_is_close_to_float32(tiny_run, completer):
    _, config, model = tiny_run
    image = gradient_photo(64, 72)
    hole = np.zeros((64, 72), bool)
    hole[12:44, 20:60] = True
    fp32 = completer.complete(image, hole, postprocess=False)
    bf16 = Completer.from_model(config, model, precision="bfloat16").complete(
        image, hole, postprocess=False)
    np.testing.assert_array_equal(bf16[~hole], image[~hole])
    assert psnr(bf16[hole] / 255.0, fp32[hole] / 255.0) > 36.0


@pytest.mark.slow
def test_complete_signature_and_completer_from_saved_model(tiny_exports, completer):
    loaded = tf.saved_model.load(tiny_exports["fp32"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 4"):
        loaded.signatures["complete"](image=tf.zeros([1, 30, 32, 3]),
                                      mask=tf.ones([1, 30, 32, 1]))
    config = tiny_exports["config"]
    image = (np.random.default_rng(1).random((45, 61, 3)) * 255).astype(np.uint8)
    hole = np.zeros((45, 61), bool)
    hole[10:30, 5:50] = True
    from_model = completer  # Completer.from_model of the exported run's network
    from_saved = Completer.from_path(tiny_exports["fp32"])
    assert from_saved.config == config and from_saved.step == STEP
    for post in ("opencv", "in-graph", "none"):
        a = from_model.complete(image, hole, postprocess=post)
        b = from_saved.complete(image, hole, postprocess=post)
        assert np.abs(a.astype(int) - b).max() <= 1
    # A TF Serving base path resolves to its highest version (the bf16 export).
    latest = Completer.from_path(tiny_exports["base"])
    assert latest.source.endswith(os.path.join("glcic", "2"))
    c = latest.complete(image, hole, postprocess=False)
    assert psnr(c[hole] / 255.0, a[hole] / 255.0) > 30
    assert latest.precision == "bfloat16"
    with open(os.path.join(tiny_exports["bf16"], "assets", "export.json")) as f:
        layer_dtypes = json.load(f)["layer_dtypes"]
    # Kernel and bias per convolution, in layer order; the documented layers stay float32.
    dtypes = [v.dtype.name for v in latest._loaded.folded_variables]
    assert dtypes[0::2] == dtypes[1::2] == list(layer_dtypes.values())
    assert [n for n, d in layer_dtypes.items() if d == "float32"] == list(
        folding.BFLOAT16_FLOAT32_LAYERS)


def test_saved_model_precision_is_the_exports(tiny_exports, tmp_path, capsys):
    with pytest.raises(CompletionError,
                       match=r"glcic/1: this SavedModel computes in float32 .*not bfloat16"):
        Completer.from_path(tiny_exports["fp32"], precision="bfloat16")
    assert Completer.from_path(tiny_exports["fp32"], "float32").precision == "float32"
    assert Completer.from_path(tiny_exports["base"], "bfloat16").precision == "bfloat16"
    cli = load_pipeline("complete")
    image = str(tmp_path / "in.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    code = cli.main(cli.parse_args(["--model", tiny_exports["fp32"], "--image", image,
                                    "--out", str(tmp_path / "out.png"),
                                    "--precision", "bfloat16"]))
    err = capsys.readouterr().err
    assert code == 1 and "computes in float32" in err and "fixed at export" in err
