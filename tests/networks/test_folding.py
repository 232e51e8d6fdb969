"""Batch norm folded into the convolutions: the Keras model's outputs in float32, bf16 with the
documented float32 layers, and the fallback for layers it does not know."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.benchmarks.completion import he_normal_weights, psnr
from glcic_tf.config import get_preset
from glcic_tf.networks import folding, models

from helpers.scripts import REPO

WIDTH = 1 / 16


@pytest.mark.parametrize("padding", ["same", "torch"])
def test_folded_network_matches_the_keras_model(padding):
    config = get_preset("tiny").override({"model.width": WIDTH, "model.padding": padding})
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed=1)
    rng = np.random.default_rng(0)
    x = {"image": rng.random((2, 36, 44, 3)).astype(np.float32),
         "mask": (rng.random((2, 36, 44, 1)) > 0.5).astype(np.float32)}
    want = model(x, training=False).numpy()
    assert want.std() > 0.05  # outputs vary, so the comparison means something
    folded = folding.fold_batch_norm(model)
    assert isinstance(folded, folding.FoldedNetwork)
    assert len(folded.variables) == 2 * 17  # one kernel and one bias per convolution
    np.testing.assert_allclose(folded(x).numpy(), want, atol=1e-4)
    bf16 = folding.fold_batch_norm(model, "bfloat16")
    assert bf16.variables[0].dtype == tf.float32  # conv1 stays float32
    assert bf16.variables[4].dtype == tf.bfloat16  # conv3
    assert psnr(bf16(x).numpy(), want) > 35


def test_live_folding_equals_stored_folding_and_follows_the_keras_variables():
    config = get_preset("tiny").override({"model.width": WIDTH})
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed=2)
    rng = np.random.default_rng(1)
    x = {"image": rng.random((1, 32, 40, 3)).astype(np.float32),
         "mask": (rng.random((1, 32, 40, 1)) > 0.5).astype(np.float32)}
    stored = folding.fold_batch_norm(model)
    live = folding.fold_batch_norm(model, live=True)
    assert live.source_model is model and stored.source_model is None
    # Its variables are the Keras model's own (what a float32 export saves).
    assert [v.path for v in live.variables] == [v.path for v in model.variables]
    # The same float32 operations in numpy and in TensorFlow: the same kernels.
    np.testing.assert_allclose(live(x).numpy(), stored(x).numpy(), rtol=0, atol=1e-6)
    # Live: new Keras weights (moving statistics included) change the output with them.
    he_normal_weights(model, seed=3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
    want = model(x, training=False).numpy()
    assert np.abs(want - stored(x).numpy()).max() > 0.01
    np.testing.assert_allclose(live(x).numpy(), want, atol=1e-4)
    with pytest.raises(ValueError, match="live folding is float32 only"):
        folding.fold_batch_norm(model, "bfloat16", live=True)


def test_fold_falls_back_to_keras_for_unknown_layers(caplog):
    image = keras.Input((None, None, 3), name="image")
    mask = keras.Input((None, None, 1), name="mask")
    x = keras.layers.Concatenate()([image, mask])
    x = keras.layers.Conv2D(3, 3, padding="same")(x)
    x = keras.layers.LayerNormalization()(x)
    model = keras.Model({"image": image, "mask": mask}, x)
    assert folding.fold_batch_norm(model) is model
    assert "batch norm not folded" in caplog.text and "LayerNormalization" in caplog.text


def test_bfloat16_keeps_the_documented_layers_in_float32(tiny_run):
    _, _, model = tiny_run
    names = [name for name, *_ in models.COMPLETION_LAYERS]
    mixed = ("conv1", "conv2", "conv10", "output_conv")
    assert folding.BFLOAT16_FLOAT32_LAYERS == mixed
    # The measurements' table (docs/inference.md) marks the default row with its float32 layers.
    with open(os.path.join(REPO, "docs", "inference.md")) as f:
        row = next(line for line in f if "<- default" in line)
    assert row.split("|")[1].strip().split(", ") == list(mixed)
    folded = folding.fold_batch_norm(model, "bfloat16")
    assert folded.layer_dtypes == {n: "float32" if n in mixed else "bfloat16" for n in names}
    kernels = [v.dtype.name for v in folded.variables[0::2]]
    biases = [v.dtype.name for v in folded.variables[1::2]]
    assert kernels == biases == [folded.layer_dtypes[n] for n in names]
    all_bf16 = folding.fold_batch_norm(model, "bfloat16", float32_layers=())
    assert set(all_bf16.layer_dtypes.values()) == {"bfloat16"}
    assert set(folding.fold_batch_norm(model).layer_dtypes.values()) == {"float32"}
    with pytest.raises(ValueError, match=r"float32_layers: \['conv99'\] are not convolutions"):
        folding.fold_batch_norm(model, "bfloat16", float32_layers=("conv1", "conv99"))


def test_bfloat16_network_is_close_to_float32(tiny_run):
    _, _, model = tiny_run
    rng = np.random.default_rng(0)
    x = {"image": rng.random((1, 64, 64, 3)).astype(np.float32),
         "mask": (rng.random((1, 64, 64, 1)) > 0.5).astype(np.float32)}
    want = model(x, training=False).numpy()
    assert want.std() > 0.05
    mixed = psnr(folding.fold_batch_norm(model, "bfloat16")(x).numpy(), want)
    all_bf16 = psnr(folding.fold_batch_norm(model, "bfloat16", float32_layers=())(x).numpy(),
                    want)
    # Width 1/16 (16x fewer channels than the paper's): ~42.5 and ~40.7 dB; at full width and
    # 512x512, 40.8 and 39.3 dB (docs/inference.md).
    assert mixed > 39.0 and mixed > all_bf16
