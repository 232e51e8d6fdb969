"""Learning curves during training (glcic_tf/evaluation/curve.py) and their plot."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.evaluation import curve as learning_curve
from glcic_tf.evaluation import evaluate as evaluation
from glcic_tf.training import runs
from glcic_tf.training import inputs
from glcic_tf.training import loop

from helpers.runs import IMAGES, make_run_dir, tiny_eval_config


def test_scorer_agrees_with_the_evaluation_report(eval_shards, tmp_path):
    run_dir = str(tmp_path / "run")
    config, model = make_run_dir(run_dir, step=0)
    scorer = learning_curve.HeldOutScorer(eval_shards, config, num_images=IMAGES)
    assert scorer.num_images == IMAGES
    figures = scorer.score(model)
    # evaluate.py with one mask per image (seed 0, index 0) scores the very same holes.
    report = evaluation.evaluate(run_dir, eval_shards, str(tmp_path / "eval"), masks_per_image=1,
                                 postprocess=False, contact_rows=0, log=None)
    for kind in ("rect", "freeform"):
        r = report["results"]
        want_l1, want_psnr = r["ours"][kind]["l1_hole"]["mean"], r["ours"][kind]["psnr"]["mean"]
        assert figures[f"{kind}/hole_l1"] == pytest.approx(want_l1, abs=1e-3)
        assert figures[f"{kind}/psnr"] == pytest.approx(want_psnr, abs=1e-3)
        assert scorer.baselines["telea"][f"{kind}/hole_l1"] == pytest.approx(
            r["telea"][kind]["l1_hole"]["mean"], abs=1e-3)
        assert scorer.baselines["navier_stokes"][f"{kind}/psnr"] == pytest.approx(
            r["navier_stokes"][kind]["psnr"]["mean"], abs=1e-3)
    assert figures["hole_l1"] == pytest.approx(
        (figures["rect/hole_l1"] + figures["freeform/hole_l1"]) / 2, abs=1e-3)


@pytest.mark.slow  # a real (tiny) training run with four scored points: ~30 s
def test_training_writes_the_curve_to_jsonl_and_tensorboard(eval_shards, tmp_path):
    config = tiny_eval_config().override({
        "schedule.batch_size": 2, "schedule.steps_completion": 4,
        "schedule.steps_discriminator": 1, "schedule.steps_joint": 1,
        "schedule.eval_every": 2, "schedule.eval_images": 2, "schedule.log_every": 1,
        "schedule.image_every": 100, "schedule.checkpoint_every": 100})
    batch = inputs.synthetic_batch(config, 2)
    ds = lambda ctx=None: tf.data.Dataset.from_tensors(batch).repeat()  # noqa: E731
    run_dir = str(tmp_path / "run")
    loop.run_training(config, run_dir, train_dataset_fn=ds, eval_pattern=eval_shards,
                      verbose=0)
    points = learning_curve.read_curve(os.path.join(run_dir, learning_curve.CURVE_NAME))
    assert [p["step"] for p in points] == [0, 2, 4, 6]
    assert [p["phase"] for p in points] == [1, 1, 1, 3]
    minutes = [p["minutes"] for p in points]
    assert minutes == sorted(minutes) and minutes[0] == 0.0
    for p in points:
        assert np.isfinite(p["hole_l1"]) and p["images"] == 2
        assert set(p["baselines"]) == {"telea", "navier_stokes"}
    tags = set()
    for event_file in tf.io.gfile.glob(os.path.join(runs.log_dir(run_dir), "train", "*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(v.tag for v in event.summary.value)
    assert {"eval/hole_l1", "eval/psnr", "eval/telea_hole_l1",
            "eval/navier_stokes_psnr", "eval/rect/hole_l1"} <= tags


def test_plot_draws_a_png(tmp_path):
    base = {"telea": {"hole_l1": 20.0, "psnr": 25.0, "rect/hole_l1": 22.0, "rect/psnr": 24.0,
                      "freeform/hole_l1": 18.0, "freeform/psnr": 26.0}}
    base["navier_stokes"] = dict(base["telea"])
    points = [{"step": s, "phase": 1 if s < 20 else 3, "minutes": s / 10, "hole_l1": 30 - s / 2,
               "psnr": 22 + s / 10, "rect/hole_l1": 31 - s / 2, "rect/psnr": 21 + s / 10,
               "freeform/hole_l1": 29 - s / 2, "freeform/psnr": 23 + s / 10,
               "baselines": base, "images": 4} for s in range(0, 40, 10)]
    path = learning_curve.plot_curve(points, str(tmp_path / "curve.png"), title="t")
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > 600 and image.size[1] > 200
    with pytest.raises(ValueError, match="no learning-curve points"):
        learning_curve.plot_curve([], str(tmp_path / "none.png"))


def test_read_curve_of_a_missing_file_is_empty(tmp_path):
    assert learning_curve.read_curve(str(tmp_path / "none.jsonl")) == []
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n\n")
    assert learning_curve.read_curve(str(path)) == [{"step": 1}]
