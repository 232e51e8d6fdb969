"""SavedModel export: layout, versions, assets, refusals, bf16 with and without folding, float32
folded live (the Keras variables saved) and unfolded. (The signatures: test_signatures.py; the
command line: tests/pipelines/test_export.py.)

The exports under test are the session's `tiny_exports` (version 1 float32, version 2 bfloat16
of `tiny_run`); tests that need another export write it to their own tmp_path.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.benchmarks.completion import psnr
from glcic_tf.config import GLCICConfig
from glcic_tf.inference import export, sizing
from glcic_tf.networks import folding

from helpers.inference import keras_composite, keras_network_from_export
from helpers.runs import STEP


def test_layout_versions_and_assets(tiny_exports, tmp_path):
    base = tiny_exports["base"]
    assert tiny_exports["fp32"] == os.path.join(base, "1")
    assert tiny_exports["bf16"] == os.path.join(base, "2")
    assert sorted(os.listdir(base)) == ["1", "2"]  # no staging leftovers
    for version in ("1", "2"):
        names = set(os.listdir(os.path.join(base, version)))
        assert {"saved_model.pb", "variables", "assets"} <= names
    assets = os.path.join(tiny_exports["fp32"], "assets")
    assert GLCICConfig.load(os.path.join(assets, "config.json")) == tiny_exports["config"]
    with open(os.path.join(assets, "mean_pixel.json")) as f:
        assert json.load(f)["mean_pixel"] == [0.5, 0.4, 0.3]
    with open(os.path.join(assets, "model_card.md")) as f:
        card = f.read()
    for text in (f"{STEP} training steps", "`tiny`", "mean_fill", "serving_default", "complete",
                 "Intended use", "Limitations"):
        assert text in card, text
    with open(os.path.join(tiny_exports["bf16"], "assets", "export.json")) as f:
        info = json.load(f)
    assert info["precision"] == "bfloat16" and info["step"] == STEP
    # The default maxdim follows the training crop: 500 px for 256 px crops, 124 for 64 px.
    assert info["maxdim"] == sizing.default_maxdim(tiny_exports["config"]) == 124
    assert info["fold_batch_norm"] is True  # bf16 runs the folded network by default
    assert info["postprocess"] == "in-graph"  # the default
    assert info["signatures"] == ["serving_default", "serving_float", "complete"]
    assert "Post-processing (`serving_default`, `serving_float`): in the graph" in card
    assert export.next_version(base) == 3
    assert export.latest_version_dir(base) == tiny_exports["bf16"]
    assert export.next_version(str(tmp_path / "nothing")) == 1


def test_refuses_to_overwrite_and_rejects_bad_arguments(tiny_exports):
    model, config, base = tiny_exports["model"], tiny_exports["config"], tiny_exports["base"]
    before = os.path.getmtime(os.path.join(base, "1", "saved_model.pb"))
    with pytest.raises(export.ExportError, match=r"glcic/1 already exists: refusing to "
                                                 r"overwrite version 1"):
        export.export_saved_model(model, config, base, version=1)
    with pytest.raises(export.ExportError, match="precision must be one of"):
        export.export_saved_model(model, config, base, precision="float16")
    with pytest.raises(export.ExportError, match="version must be a positive integer"):
        export.export_saved_model(model, config, base, version=0)
    with pytest.raises(export.ExportError, match="postprocess must be one of"):
        export.export_saved_model(model, config, base, postprocess="opencv")
    assert os.path.getmtime(os.path.join(base, "1", "saved_model.pb")) == before
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_bfloat16_export_without_folding_keeps_the_float32_layers(tiny_run, tmp_path):
    _, config, model = tiny_run
    # Only the `complete` signature is checked: no in-graph post-processing (3x faster export).
    path = export.export_saved_model(model, config, str(tmp_path / "unfolded"),
                                     precision="bfloat16", fold_batch_norm=False,
                                     postprocess="none")
    with open(os.path.join(path, "assets", "export.json")) as f:
        info = json.load(f)
    assert info["fold_batch_norm"] is False
    assert info["float32_layers"] == list(folding.BFLOAT16_FLOAT32_LAYERS)
    assert [n for n, d in info["layer_dtypes"].items() if d == "float32"] == list(
        folding.BFLOAT16_FLOAT32_LAYERS)
    assert len(info["layer_dtypes"]) == 17
    rng = np.random.default_rng(3)
    image = rng.random((1, 32, 40, 3)).astype(np.float32)
    mask = np.zeros((1, 32, 40, 1), np.float32)
    mask[:, 8:24, 4:36] = 1.0
    got = tf.saved_model.load(path).signatures["complete"](image=image, mask=mask)
    assert psnr(got["completed"].numpy(), keras_composite(model, config, image, mask)) > 36.0
    with pytest.raises(export.ExportError, match=r"float32_layers: \['nope'\]"):
        export.export_saved_model(model, config, str(tmp_path / "bad"),
                                  precision="bfloat16", float32_layers=("nope",))


def test_float32_export_folds_live_and_saves_the_keras_variables(tiny_exports, tmp_path):
    model, config = tiny_exports["model"], tiny_exports["config"]
    with open(os.path.join(tiny_exports["fp32"], "assets", "export.json")) as f:
        assert json.load(f)["fold_batch_norm"] is True  # the default for float32 too
    # The saved variables are the Keras network's (train.py --init-from reads them).
    _, fresh = keras_network_from_export(tiny_exports["fp32"])
    for want, got in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)
    rng = np.random.default_rng(2)
    image = rng.random((1, 32, 40, 3)).astype(np.float32)
    mask = np.zeros((1, 32, 40, 1), np.float32)
    mask[:, 8:24, 4:36] = 1.0
    want = keras_composite(model, config, image, mask)
    folded = tf.saved_model.load(tiny_exports["fp32"]).signatures["complete"]
    got = folded(image=image, mask=mask)["completed"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    # Without folding: the Keras model as it is (no post-processing: a 3x faster export).
    path = export.export_saved_model(model, config, str(tmp_path / "unfolded"),
                                     fold_batch_norm=False, postprocess="none")
    with open(os.path.join(path, "assets", "export.json")) as f:
        assert json.load(f)["fold_batch_norm"] is False
    unfolded = tf.saved_model.load(path).signatures["complete"]
    np.testing.assert_allclose(unfolded(image=image, mask=mask)["completed"].numpy(), want,
                               atol=1e-5)
