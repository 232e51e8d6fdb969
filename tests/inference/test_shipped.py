"""The network shipped in models/glcic_photos128: loads, has its signatures and assets, inpaints."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.config import GLCICConfig
from glcic_tf.inference import shipped, sizing
from glcic_tf.inference.completer import Completer


@pytest.fixture(scope="module")
def version_dir():
    return shipped.version_dir()


@pytest.fixture(scope="module")
def completer(version_dir):
    return Completer.from_path(shipped.model_path())


def test_shipped_model_layout_and_assets(version_dir):
    base = shipped.model_path()
    assert os.path.isfile(os.path.join(base, "MODEL_CARD.md"))
    size = sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(version_dir) for f in files)
    assert size < 30 * 2**20
    config = GLCICConfig.load(os.path.join(version_dir, "assets", "config.json"))
    assert config.name == "photos128" and config.model.output == "harmonic_residual"
    with open(os.path.join(version_dir, "assets", "export.json")) as f:
        info = json.load(f)
    assert info["precision"] == "float32" and info["step"] == config.schedule.total_steps
    assert info["maxdim"] == sizing.default_maxdim(config) == 252
    assert info["postprocess"] == "in-graph"
    with open(os.path.join(version_dir, "assets", "model_card.md")) as f:
        card = f.read()
    for text in ("pipelines/train.py --preset photos128", "Paired differences", "minutes",
                 "images/s"):
        assert text in card


def test_signatures(version_dir):
    loaded = tf.saved_model.load(version_dir)
    assert set(loaded.signatures) == {"serving_default", "serving_float", "complete"}
    spec = loaded.signatures["serving_default"].structured_input_signature[1]
    assert set(spec) == {"image_bytes", "mask_bytes"}


def _sample_photo():
    """A real photograph that ships with scikit-image (not one the model was trained on),
    scaled to the model's training scale (shorter side 160 px)."""
    import cv2
    import skimage.data

    image = skimage.data.coffee()
    scale = 160 / min(image.shape[:2])
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)


def test_completes_a_photo_far_better_than_mean_fill(completer):
    image = _sample_photo()
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    ours, mean_fill = [], []
    mean = np.asarray(completer.config.data.mean_pixel) * 255
    for _ in range(6):
        hh, ww = rng.integers(48, 65, size=2)
        y, x = rng.integers(0, h - hh), rng.integers(0, w - ww)
        hole = np.zeros((h, w), bool)
        hole[y:y + hh, x:x + ww] = True
        out = completer.complete(image, hole, postprocess=False)
        assert out.shape == image.shape
        np.testing.assert_array_equal(out[~hole], image[~hole])
        truth = image[hole].astype(np.float64)
        ours.append(np.abs(out[hole] - truth).mean())
        mean_fill.append(np.abs(mean - truth).mean())
    assert np.mean(ours) < 0.6 * np.mean(mean_fill), (ours, mean_fill)


@pytest.mark.slow
def test_serving_default_equals_the_completer_in_graph(version_dir, completer):
    image = _sample_photo()
    hole = np.zeros(image.shape[:2], bool)
    hole[40:90, 60:120] = True
    loaded = tf.saved_model.load(version_dir)
    out = loaded.signatures["serving_default"](
        image_bytes=tf.constant([tf.io.encode_png(image).numpy()]),
        mask_bytes=tf.constant([tf.io.encode_png(hole[..., None].astype(np.uint8) * 255)
                                .numpy()]))["completed_bytes"]
    served = tf.io.decode_png(out[0]).numpy()
    np.testing.assert_array_equal(served, completer.complete(image, hole, postprocess="in-graph"))
    raw = completer.complete(image, hole, postprocess="none")
    assert np.abs(served.astype(int) - raw)[hole].mean() > 0.5  # post-processed


def _photo_crops(size=128):
    """Centre crops of real photographs that ship with scikit-image, at the training scale."""
    import cv2
    import skimage.data

    crops = []
    for name in ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry"):
        image = getattr(skimage.data, name)()
        scale = 160 / min(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        y, x = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crops.append(np.ascontiguousarray(image[y:y + size, x:x + size]))
    return crops


def test_in_graph_postprocessing_matches_opencv_on_real_photos(completer):
    """The served (in-graph) post-processing against the paper's OpenCV one: hole L1 within
    1.0 and PSNR within 0.3 dB on average (the figures docs/postprocess.md states), and the two
    pictures close to each other."""
    rng = np.random.default_rng(0)
    l1 = {"opencv": [], "in-graph": []}
    psnr = {"opencv": [], "in-graph": []}
    between = []
    for image in _photo_crops():
        for _ in range(3):
            hole = np.zeros(image.shape[:2], bool)
            hh, ww = rng.integers(48, 65, size=2)
            y, x = rng.integers(0, 128 - hh), rng.integers(0, 128 - ww)
            hole[y:y + hh, x:x + ww] = True
            outs = {mode: completer.complete(image, hole, postprocess=mode).astype(np.float64)
                    for mode in ("opencv", "in-graph")}
            for mode, out in outs.items():
                l1[mode].append(np.abs(out - image)[hole].mean())
                psnr[mode].append(10 * np.log10(255 ** 2 / np.mean((out - image) ** 2)))
            between.append(10 * np.log10(255 ** 2 / np.mean(
                (outs["opencv"] - outs["in-graph"])[hole] ** 2)))
    assert abs(np.mean(l1["in-graph"]) - np.mean(l1["opencv"])) < 1.0, l1
    assert abs(np.mean(psnr["in-graph"]) - np.mean(psnr["opencv"])) < 0.3, psnr
    assert np.median(between) > 30, between


@pytest.mark.slow  # an export of the photos128 network: ~20 s
def test_a_batch_norm_folded_re_export_completes_like_the_shipped_model(version_dir, tmp_path):
    """Float32 exports fold batch norm by default since the shipped version was written
    (without folding): its trained weights (real moving statistics, the harmonic fill and
    residual output) re-exported the new way give the same completion within float rounding,
    and the re-export's variables are the shipped ones."""
    from glcic_tf.inference import export

    from helpers.inference import keras_network_from_export

    config, model = keras_network_from_export(version_dir)
    path = export.export_saved_model(model, config, str(tmp_path / "glcic"),
                                     step=config.schedule.total_steps, postprocess="none")
    with open(os.path.join(path, "assets", "export.json")) as f:
        assert json.load(f)["fold_batch_norm"] is True
    _, again = keras_network_from_export(path)
    for want, got in zip(model.weights, again.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)
    image = _sample_photo()[:160, :212].astype(np.float32)[None] / 255.0
    mask = np.zeros((1, 160, 212, 1), np.float32)
    mask[:, 40:100, 60:124] = 1.0
    shipped_out = tf.saved_model.load(version_dir).signatures["complete"](
        image=image, mask=mask)["completed"].numpy()
    folded_out = tf.saved_model.load(path).signatures["complete"](
        image=image, mask=mask)["completed"].numpy()
    assert np.abs(shipped_out - image)[mask[..., 0] > 0].mean() > 0.02  # a real completion
    np.testing.assert_allclose(folded_out, shipped_out, atol=1e-4)
    assert (np.round(folded_out * 255) == np.round(shipped_out * 255)).mean() > 0.999
