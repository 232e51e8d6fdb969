"""pipelines/export.py: an untrained export warns and refuses to overwrite a version;
--postprocess none serves the raw composite."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.inference.completer import Completer

from helpers.scripts import load_pipeline


@pytest.mark.slow
def test_untrained_export_warns_refuses_overwrite_and_serves_the_raw_composite(
        tmp_path, capsys):
    # One export for what were two tests (an untrained export with the default post-processing,
    # then one with --postprocess none): exports are the slow part, and the default
    # post-processing is the library's (tests/inference/test_export.py).
    cli = load_pipeline("export")
    base = str(tmp_path / "glcic")
    assert cli.parse_args(["--out", base]).postprocess == "in-graph"  # the default
    assert cli.main(cli.parse_args(["--out", base, "--preset", "tiny",
                                    "--postprocess", "none"])) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "UNTRAINED" in captured.err
    assert "post-processing: none" in captured.out
    version = os.path.join(base, "1")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    with open(os.path.join(version, "assets", "export.json")) as f:
        assert json.load(f)["postprocess"] == "none"
    with open(os.path.join(version, "assets", "model_card.md")) as f:
        card = f.read()
    assert "NOT TRAINED" in card
    assert "none (the raw composite" in card
    assert cli.main(cli.parse_args(["--out", base, "--preset", "tiny", "--version", "1"])) == 1
    err = capsys.readouterr().err
    assert "already exists: refusing to overwrite version 1" in err
    rng = np.random.default_rng(4)
    image = (rng.random((36, 44, 3)) * 255).astype(np.uint8)
    hole = np.zeros((36, 44), bool)
    hole[6:30, 8:40] = True
    served = tf.io.decode_png(tf.saved_model.load(version).signatures["serving_default"](
        image_bytes=tf.constant([tf.io.encode_png(image).numpy()]),
        mask_bytes=tf.constant([tf.io.encode_png(hole[..., None].astype(np.uint8) * 255)
                                .numpy()]))["completed_bytes"][0]).numpy()
    completer = Completer.from_path(version)
    raw = completer.complete(image, hole, postprocess="none")
    assert np.abs(served.astype(int) - raw).max() <= 1
    post = completer.complete(image, hole, postprocess="in-graph")
    assert np.abs(served.astype(int) - post).max() > 10
