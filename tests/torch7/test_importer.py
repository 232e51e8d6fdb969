"""glcic_tf.torch7.importer and pipelines/import_torch7.py: the authors' released completion
networks as glcic_tf run directories.

Synthetic .t7 files with the official structure and seeded weights stand in for the released
files (never shipped or downloaded). Keras' padding and kernel layout are checked against naive
loops written from the Torch definitions (helpers.torch7); the imported Keras network, and its
SavedModel export, against an oracle that runs those naive loops on the raw module table (no
importer code involved).
"""

import json
import os

import keras
import numpy as np
import pytest

from glcic_tf.data import masks
from glcic_tf.networks import models
from glcic_tf.training import runs
from glcic_tf.torch7 import importer
from glcic_tf.torch7.completionnet import Layer, parse_completionnet
from glcic_tf.torch7.synthetic import synthetic_completionnet
from glcic_tf.torch7.values import Torch7Error
from glcic_tf.torch7.writer import save_t7
from glcic_tf.config import ConfigError, GLCICConfig, ModelConfig, get_preset

from helpers.scripts import load_pipeline
from helpers.torch7 import naive_conv, naive_full_conv, write_t7


# --- padding: Keras vs Torch -------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(4, 6), (5, 3)])
def test_transposed_conv_same_padding_equals_torch_full_convolution(h, w):
    # Keras Conv2DTranspose(4, strides=2, padding="same") with the kernel mapped as
    # [in, out, kh, kw] -> [kh, kw, out, in] (no spatial flip) is Torch's
    # SpatialFullConvolution(4, 4, 2, 2, 1, 1).
    rng = np.random.default_rng(1)
    cin, cout = 3, 5
    weight = rng.normal(size=(cin, cout, 4, 4)).astype(np.float32)
    bias = rng.normal(size=cout).astype(np.float32)
    x = rng.normal(size=(cin, h, w)).astype(np.float32)
    expected = naive_full_conv(x.astype(np.float64), weight, bias, 2, 1)
    assert expected.shape == (cout, 2 * h, 2 * w)

    layer = keras.layers.Conv2DTranspose(cout, 4, strides=2, padding="same")
    layer.build((1, h, w, cin))
    layer.set_weights([weight.transpose(2, 3, 1, 0), bias])
    got = np.asarray(layer(x.transpose(1, 2, 0)[None]))[0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    layer_kernel = importer.keras_kernel(Layer("deconv", "d", {"weight": weight}))
    np.testing.assert_array_equal(layer_kernel, weight.transpose(2, 3, 1, 0))

    # A spatially flipped kernel is wrong: the mapping is not symmetric by accident.
    layer.set_weights([weight[:, :, ::-1, ::-1].transpose(2, 3, 1, 0), bias])
    flipped = np.asarray(layer(x.transpose(1, 2, 0)[None]))[0].transpose(2, 0, 1)
    assert np.abs(flipped - expected).max() > 0.1


def test_strided_conv_needs_torch_padding():
    # 3x3 stride 2 on an even input: Torch pads (1, 1); Keras 'same' pads (0, 1).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 6)).astype(np.float32)
    weight = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    bias = np.zeros(3, np.float32)
    expected = naive_conv(x.astype(np.float64), weight, bias, 2, 1)
    kernel = weight.transpose(2, 3, 1, 0)
    inp = x.transpose(1, 2, 0)[None]
    torch_like = keras.Sequential([keras.layers.ZeroPadding2D(((1, 1), (1, 1))),
                                   keras.layers.Conv2D(3, 3, strides=2, padding="valid")])
    torch_like.build((1, 8, 6, 2))
    torch_like.layers[-1].set_weights([kernel, bias])
    np.testing.assert_allclose(np.asarray(torch_like(inp))[0].transpose(2, 0, 1), expected,
                               atol=1e-5)
    same = keras.layers.Conv2D(3, 3, strides=2, padding="same")
    same.build((1, 8, 6, 2))
    same.set_weights([kernel, bias])
    assert np.abs(np.asarray(same(inp))[0].transpose(2, 0, 1) - expected).max() > 0.1


def test_padding_option_keeps_parameters_and_names():
    default = models.completion_network()
    torch_pad = models.completion_network(config=ModelConfig(padding="torch"))
    count = sum(int(np.prod(w.shape)) for w in torch_pad.trainable_weights)
    assert count == 6_072_131 == sum(int(np.prod(w.shape)) for w in default.trainable_weights)
    pads = [layer.name for layer in torch_pad.layers
            if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert pads == ["conv2_pad", "conv4_pad"]
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in default.layers)
    out = torch_pad({"image": np.zeros((1, 20, 28, 3), np.float32),
                     "mask": np.zeros((1, 20, 28, 1), np.float32)})
    assert out.shape == (1, 20, 28, 3)
    # The discriminators' 5x5 stride-2 convolutions follow the same option.
    d_same = models.context_discriminator(64, 32, width=1 / 16)
    d_torch = models.context_discriminator(64, 32, width=1 / 16,
                                           config=ModelConfig(padding="torch"))
    assert d_torch.count_params() == d_same.count_params()
    assert d_torch.get_layer("global_discriminator").get_layer("global_conv1_pad").padding == (
        (2, 2), (2, 2))
    with pytest.raises(ConfigError, match=r"model.padding must be one of \('same', 'torch'\), "
                                          r"got 'reflect'"):
        get_preset("paper").override({"model.padding": "reflect"})


# --- importing the completion network ----------------------------------------------------------


def _oracle_forward(root, image, mask):
    """Runs the Torch model of a .t7 table with the naive layers of helpers.torch7, every tensor and
    hyperparameter read from the raw module fields (none of the importer's parsing, kernel
    mapping or reference forward pass): Torch's input cat((image - mean) * (1 - mask), mask),
    batch norm in evaluation mode. image [H, W, 3], mask [H, W, 1]; returns [H, W, 3]."""
    mean = np.asarray(root["mean"], np.float64)
    x = np.concatenate([(image - mean) * (1 - mask), mask], -1).transpose(2, 0, 1)
    x = x.astype(np.float64)
    seen = []
    for m in root["model"].fields["modules"].list():
        kind, f = m.class_name.split(".")[-1], m.fields
        seen.append(kind)
        if kind in ("SpatialConvolution", "SpatialDilatedConvolution"):
            assert (f["dW"], f["padW"]) == (f["dH"], f["padH"])
            x = naive_conv(x, np.asarray(f["weight"], np.float64), np.asarray(f["bias"]),
                           f["dW"], f["padW"], f.get("dilationW", 1))
        elif kind == "SpatialFullConvolution":
            assert (f["dW"], f["padW"], f.get("adjW", 0)) == (f["dH"], f["padH"], 0)
            x = naive_full_conv(x, np.asarray(f["weight"], np.float64), np.asarray(f["bias"]),
                                f["dW"], f["padW"])
        elif kind == "SpatialBatchNormalization":
            def c(v):
                return np.asarray(v, np.float64)[:, None, None]

            x = ((x - c(f["running_mean"])) / np.sqrt(c(f["running_var"]) + f["eps"])
                 * c(f["weight"]) + c(f["bias"]))
        elif kind == "ReLU":
            x = np.maximum(x, 0.0)
        elif kind == "Sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        else:
            raise AssertionError(f"unexpected module {m.class_name}")
    assert seen.count("SpatialBatchNormalization") == 16 and seen[-1] == "Sigmoid"
    return x.transpose(1, 2, 0)


def _oracle_case():
    rng = np.random.default_rng(21)
    image = rng.random((24, 32, 3)).astype(np.float32)
    mask = np.zeros((24, 32, 1), np.float32)
    mask[5:17, 9:25] = 1.0
    return image, mask


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A width-1/8 synthetic file (weights in one shared storage, cudnn names) imported once."""
    tmp = tmp_path_factory.mktemp("t7")
    root = synthetic_completionnet(0.125, seed=7, mean=(0.3, 0.5, 0.6), shared_storage=True,
                                   cudnn=True)
    path = str(tmp / "completionnet_small.t7")
    save_t7(path, root)
    run_dir = importer.import_torch7(path, str(tmp / "run"))
    return root, path, run_dir


def test_imported_network_matches_an_oracle_built_from_the_raw_module_table(imported):
    root, _, run_dir = imported
    config, completion, step = runs.load_completion_network(run_dir)
    assert step == 0
    rng = np.random.default_rng(0)
    image = rng.random((2, 16, 24, 3)).astype(np.float32)
    mask = np.zeros((2, 16, 24, 1), np.float32)
    mask[0, 4:12, 6:18] = 1
    mask[1, 0:8, 12:24] = 1
    got = np.asarray(completion(masks.network_inputs(image, mask, config.data),
                                training=False))
    # The expectation reads the in-memory table that was written, not the file, and none of
    # the importer's code.
    expected = np.stack([_oracle_forward(root, image[i].astype(np.float64),
                                         mask[i].astype(np.float64)) for i in range(2)])
    assert np.abs(got - expected).max() < 1e-4
    assert expected.std(axis=(1, 2)).min() > 0.1  # varies across pixels: misplaced ones show

    # Keras 'same' padding with the same weights is off by a half-pixel shift.
    same = models.completion_network(config.model.width,
                                     ModelConfig(width=config.model.width, padding="same"))
    importer.set_completion_weights(same, parse_completionnet(root))
    shifted = np.asarray(same(masks.network_inputs(image, mask, config.data), training=False))
    assert np.abs(shifted - expected).max() > 0.1


def test_imported_run_dir_config(imported):
    _, path, run_dir = imported
    config = GLCICConfig.load(runs.config_path(run_dir))
    assert config.name == "torch7-import"
    assert config.model.padding == "torch" and config.data.input_convention == "torch7"
    np.testing.assert_allclose(config.data.mean_pixel, (0.3, 0.5, 0.6), rtol=1e-6)
    assert config.model.width == 0.125 and config.model.batch_norm_epsilon == 1e-5
    assert config.model.batch_norm_momentum == pytest.approx(0.9)
    assert config.data.image_size == get_preset("paper").data.image_size
    assert runs.is_run_dir(run_dir)
    with open(os.path.join(run_dir, importer.IMPORT_INFO_NAME)) as f:
        info = json.load(f)
    assert [layer["name"] for layer in info["layers"]] == [
        spec[0] for spec in models.COMPLETION_LAYERS]
    assert info["layers"][12] == {"name": "deconv1", "kind": "deconv", "shape": [32, 16, 4, 4]}
    assert info["max_abs_diff_vs_torch_reference"] < 1e-4
    with pytest.raises(FileExistsError, match="already holds config.json"):
        importer.import_torch7(path, run_dir)


def test_cli_imports_full_width_file(tmp_path, capsys):
    cli = load_pipeline("import_torch7")
    path = str(tmp_path / "completionnet_places2.t7")
    save_t7(path, synthetic_completionnet(1.0, seed=1))
    out = str(tmp_path / "run")
    assert cli.main(cli.parse_args(["--t7", path, "--out", out])) == 0
    printed = capsys.readouterr().out
    assert "6,072,131 parameters, width 1" in printed
    assert "mean pixel (RGB): 0.4560, 0.4472, 0.4155" in printed
    assert "padding=torch, input_convention=torch7" in printed
    assert f"pipelines/export.py --checkpoint {out}" in printed
    assert f"pipelines/complete.py --model {out}" in printed
    config, completion, _ = runs.load_completion_network(out)
    assert config.model.width == 1.0
    assert sum(int(np.prod(w.shape)) for w in completion.trainable_weights) == 6_072_131
    with pytest.raises(SystemExit):
        cli.parse_args(["--t7", str(tmp_path / "nope.t7"), "--out", out])
    assert "--t7: no such file" in capsys.readouterr().err


def test_missing_mean_needs_mean_pixel(tmp_path):
    root = synthetic_completionnet(0.0625)
    path = write_t7(tmp_path, root["model"])  # the model alone, no mean
    with pytest.raises(Torch7Error, match="stores no mean pixel; pass mean_pixel"):
        importer.import_torch7(path, str(tmp_path / "run"))
    run_dir = importer.import_torch7(path, str(tmp_path / "run"), mean_pixel=(0.5, 0.5, 0.5))
    assert runs.load_completion_network(run_dir)[0].data.mean_pixel == (0.5, 0.5, 0.5)


def test_export_of_an_imported_run_computes_what_the_torch_model_computes(imported, tmp_path):
    import tensorflow as tf

    from glcic_tf.inference import export

    root, _, run_dir = imported
    # postprocess "none": the `complete` signature never post-processes, and the in-graph
    # post-processing (tested in test_export.py) triples the export's time.
    version = export.export_from_run(run_dir, str(tmp_path / "glcic"), postprocess="none")
    assets = GLCICConfig.load(os.path.join(version, "assets", "config.json"))
    assert (assets.data.input_convention, assets.model.padding) == ("torch7", "torch")
    np.testing.assert_allclose(assets.data.mean_pixel, (0.3, 0.5, 0.6), rtol=1e-6)
    image, mask = _oracle_case()
    expected = _oracle_forward(root, image.astype(np.float64), mask.astype(np.float64))
    expected = np.where(mask > 0, expected, image)  # the completed image: the hole filled
    loaded = tf.saved_model.load(version)
    got = loaded.signatures["complete"](image=tf.constant(image[None]),
                                        mask=tf.constant(mask[None]))["completed"].numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
