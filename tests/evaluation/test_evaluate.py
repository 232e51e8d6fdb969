"""glcic_tf.evaluation.evaluate and pipelines/evaluate.py with a tiny model (width 1/16, 32 px)."""

import json
import os

import numpy as np
import pytest

from glcic_tf.data import input_pipeline as data
from glcic_tf.evaluation import evaluate as evaluation
from glcic_tf.evaluation import report as report_lib
from glcic_tf.evaluation.loader import EvaluationError

from helpers.evaluation import MASKS, read_samples
from helpers.runs import IMAGES, STEP, make_run_dir, tiny_eval_config
from helpers.scripts import load_pipeline


def test_report_schema_counts_and_intervals(evaluated):
    report = evaluated["report"]
    with open(os.path.join(evaluated["out"], evaluation.REPORT_NAME)) as f:
        assert json.load(f) == report
    assert report["format"] == report_lib.REPORT_FORMAT
    assert report["methods"] == list(report_lib.METHODS)
    assert report["counts"] == {"rect": IMAGES * MASKS, "freeform": IMAGES * MASKS}
    assert report["data"]["images"] == IMAGES
    assert report["data"]["image_size"] == 32
    assert report["seed"] == 0 and report["mask_seeds"][0] == 0
    assert report["model"]["kind"] == "run_dir" and report["model"]["step"] == STEP
    assert report["model"]["config"]["model"]["width"] == 1 / 16
    for method in report_lib.METHODS:
        for kind in ("rect", "freeform"):
            for metric in report_lib.METRICS:
                r = report["results"][method][kind][metric]
                assert r["count"] + r["dropped"] == IMAGES * MASKS
                assert r["ci_low"] <= r["mean"] <= r["ci_high"], (method, kind, metric)
            bins = report["by_hole_area"][method][kind]
            assert set(bins) <= set(report["hole_area_bins"])
            assert sum(b["count"] for b in bins.values()) == IMAGES * MASKS
    # Outside the hole every method keeps the input: whole-crop L1 < hole L1.
    ours = report["results"]["ours"]["rect"]
    assert 0 < ours["l1"]["mean"] < ours["l1_hole"]["mean"]
    assert report["regression_guard"] == {"method": "ours", "mask_kind": "rect",
                                          "metric": "psnr", "postprocess": False,
                                          "value": ours["psnr"]["mean"]}
    assert len(read_samples(evaluated["out"])) == 2 * IMAGES * MASKS


def test_contact_sheet_layout(evaluated):
    from PIL import Image

    sheet = np.asarray(Image.open(os.path.join(evaluated["out"], evaluation.CONTACT_SHEET_NAME)))
    cell, pad, header, cols, rows = 32, 2, 20, 5, IMAGES  # 4 rows asked, 3 images exist
    assert sheet.shape == (header + rows * cell + (rows + 1) * pad,
                           cols * cell + (cols + 1) * pad, 3)
    info = evaluated["report"]["contact_sheet"]
    assert info["columns"] == ["masked input", "ours", "ours + post", "Telea", "ground truth"]
    assert info["rows"] == ["img0", "img1", "img2"]
    # The last column of the first row is the ground-truth crop, pixel for pixel (32 px cells).
    crop = next(iter(data.make_eval_dataset(evaluated["pattern"], tiny_eval_config())))["image"][0]
    truth = np.clip(np.round(crop.numpy() * 255), 0, 255).astype(np.uint8)
    x0, y0 = pad + 4 * (cell + pad), header + pad
    # (Resizing in another tf.data graph may round one pixel value the other way.)
    diff = np.abs(sheet[y0:y0 + cell, x0:x0 + cell].astype(int) - truth.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


def test_same_masks_across_runs_and_models(evaluated, tmp_path):
    again = str(tmp_path / "again")
    evaluation.evaluate(evaluated["run_dir"], evaluated["pattern"], again, masks_per_image=MASKS,
                        batch_size=3, contact_rows=0, log=None)
    assert read_samples(again) == read_samples(evaluated["out"])  # batch size does not matter
    other_run = str(tmp_path / "other_run")
    make_run_dir(other_run, seed=1)
    other = str(tmp_path / "other")
    evaluation.evaluate(other_run, evaluated["pattern"], other, masks_per_image=MASKS,
                        contact_rows=0, log=None)
    a, b = read_samples(evaluated["out"]), read_samples(other)
    assert [(s["key"], s["kind"], s["mask_index"], s["hole_fraction"]) for s in a] == \
        [(s["key"], s["kind"], s["mask_index"], s["hole_fraction"]) for s in b]
    for sa, sb in zip(a, b):  # baselines see the same holes: identical scores
        assert sa["scores"]["telea"] == sb["scores"]["telea"]
        assert sa["scores"]["mean_fill"] == sb["scores"]["mean_fill"]
    assert any(sa["scores"]["ours"] != sb["scores"]["ours"] for sa, sb in zip(a, b))
    # Different mask indices give different holes.
    rect = [s["hole_fraction"] for s in a if s["kind"] == "rect"]
    assert len(set(rect)) > 1


def test_eval_config_scales_holes_and_mask_seeds():
    config = tiny_eval_config()
    assert evaluation.eval_config(config) is config
    big = evaluation.eval_config(config, 64)
    assert (big.data.image_size, big.masks.local_size, big.masks.hole_min,
            big.masks.hole_max) == (64, 32, 12, 24)
    with pytest.raises(EvaluationError, match="multiple of 4"):
        evaluation.eval_config(config, 30)
    seeds = [evaluation.mask_seed(5, i) for i in range(4)]
    assert seeds[0] == 5 and len(set(seeds)) == 4
    assert seeds == [evaluation.mask_seed(5, i) for i in range(4)]


def _evaluate_cli():
    return load_pipeline("evaluate")


def test_cli_fail_below_exit_status(evaluated, tmp_path, capsys):
    cli = _evaluate_cli()
    common = ["--model", evaluated["run_dir"], "--data", evaluated["pattern"],
              "--mask-kinds", "rect", "--masks-per-image", "1", "--no-baselines",
              "--no-postprocess", "--contact-rows", "0"]
    psnr = evaluated["report"]["regression_guard"]["value"]
    assert cli.main(cli.parse_args(common + ["--out", str(tmp_path / "a"),
                                             "--fail-below", "1"])) == 0
    assert "rect holes" in capsys.readouterr().out
    assert cli.main(cli.parse_args(common + ["--out", str(tmp_path / "b"),
                                             "--fail-below", str(psnr + 100)])) == 3
    assert "REGRESSION" in capsys.readouterr().err
    assert cli.main(cli.parse_args(["--model", str(tmp_path / "nope"), "--data",
                                    evaluated["pattern"]])) == 2


def test_cli_rejects_bad_flags():
    cli = _evaluate_cli()
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "m", "--mask-kinds", "blobs"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "m", "--mask-kinds", "freeform", "--fail-below", "20"])


def test_users_mask_files_are_scored_as_their_own_kind(evaluated, tmp_path):
    from PIL import Image

    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for i in range(2):
        m = np.zeros((40, 48), np.uint8)
        m[10 + i:22 + i, 12:24] = 255
        Image.fromarray(m).save(masks_dir / f"m{i}.png")
    out = str(tmp_path / "eval_files")
    cli = load_pipeline("evaluate")
    status = cli.main(cli.parse_args(["--model", evaluated["run_dir"],
                                      "--data", evaluated["pattern"], "--out", out,
                                      "--mask-files", str(masks_dir / "*.png"),
                                      "--masks-per-image", "1", "--contact-rows", "0"]))
    assert status == 0
    with open(os.path.join(out, evaluation.REPORT_NAME)) as f:
        report = json.load(f)
    assert report["data"]["mask_kinds"] == ["rect", "freeform", "file"]
    assert report["counts"]["file"] == IMAGES
    # Deterministic: the same command gives the same file-mask scores.
    again = evaluation.evaluate(evaluated["run_dir"], evaluated["pattern"], str(tmp_path / "again"),
                                mask_kinds=("file",), masks_per_image=1, contact_rows=0,
                                mask_files=str(masks_dir / "*.png"), log=None)
    assert again["results"]["ours"]["file"]["l1_hole"]["mean"] == pytest.approx(
        report["results"]["ours"]["file"]["l1_hole"]["mean"])


def test_file_kind_without_mask_files_is_a_clear_error(evaluated, capsys):
    cli = load_pipeline("evaluate")
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", evaluated["run_dir"], "--mask-kinds", "file"])
    assert "--mask-files" in capsys.readouterr().err


def test_corrupt_shard_is_a_one_line_error_not_a_traceback(evaluated, tmp_path, capsys):
    bad = tmp_path / "bad-00000-of-00001.tfrecord"
    with open(evaluated["pattern"], "rb") as f:
        content = f.read()
    bad.write_bytes(content[:len(content) // 2])  # truncated mid-record
    cli = load_pipeline("evaluate")
    status = cli.main(cli.parse_args(["--model", evaluated["run_dir"], "--data", str(bad),
                                      "--out", str(tmp_path / "e"), "--masks-per-image", "1"]))
    assert status == 2
    err = capsys.readouterr().err
    assert "bad-00000-of-00001.tfrecord" in err and "Traceback" not in err


def test_cli_scores_both_post_processings_and_pairs_them(evaluated, tmp_path, capsys):
    cli = _evaluate_cli()
    out = str(tmp_path / "both")
    assert cli.main(cli.parse_args([
        "--model", evaluated["run_dir"], "--data", evaluated["pattern"], "--mask-kinds", "rect",
        "--masks-per-image", "1", "--no-baselines", "--postprocess", "both",
        "--contact-rows", "2", "--cell-size", "32", "--out", out])) == 0
    assert "ours + in-graph post" in capsys.readouterr().out
    with open(os.path.join(out, evaluation.REPORT_NAME)) as f:
        report = json.load(f)
    assert report["methods"] == ["ours", "ours_post", report_lib.POST_GRAPH]
    assert report["contact_sheet"]["columns"] == [
        "masked input", "ours", "ours + post", "ours + in-graph post", "ground truth"]
    paired = report["paired"][report_lib.POST_GRAPH]["ours_post"]["rect"]["l1_hole"]
    samples = read_samples(out)
    diffs = [s["scores"][report_lib.POST_GRAPH]["l1_hole"] - s["scores"]["ours_post"]["l1_hole"]
             for s in samples]
    assert paired["mean"] == pytest.approx(np.mean(diffs), abs=1e-5)
    agreement = report["postprocess_agreement_psnr_db"]["rect"]
    assert 15 < agreement["hole"]["min"] <= agreement["hole"]["median"]
    assert agreement["whole_crop"]["median"] > agreement["hole"]["median"]
    assert "PSNR between the in-graph and the OpenCV" in report_lib.markdown_table(report)
    assert evaluated["report"]["postprocess_agreement_psnr_db"] is None  # opencv only
    # The in-graph post-processing changed the network's composite inside the holes.
    assert any(s["scores"][report_lib.POST_GRAPH]["l1_hole"] != s["scores"]["ours"]["l1_hole"]
               for s in samples)
    with pytest.raises(EvaluationError, match="postprocess must be one of"):
        evaluation.evaluate(evaluated["run_dir"], evaluated["pattern"], str(tmp_path / "bad"),
                            postprocess="poisson", log=None)


def test_cli_dataset_prefix_scores_its_val_split_and_split_flag(evaluated, tmp_path, capsys):
    from helpers.datasets import write_dataset

    prefix = str(tmp_path / "shards" / "places")
    write_dataset(prefix, train=3, val=2, shards=(2, 1), size=(40, 48))
    write_dataset(str(tmp_path / "shards" / "other"), train=2, val=1, size=(40, 48))
    cli = _evaluate_cli()
    common = ["--model", evaluated["run_dir"], "--data", prefix, "--mask-kinds", "rect",
              "--masks-per-image", "1", "--no-baselines", "--no-postprocess",
              "--contact-rows", "0"]
    for split, files, images in (("val", ["places-val-00000-of-00001.tfrecord"], 2),
                                 ("train", ["places-train-00000-of-00002.tfrecord",
                                            "places-train-00001-of-00002.tfrecord"], 3)):
        out = tmp_path / split
        assert cli.main(cli.parse_args(common + ["--split", split, "--out", str(out)])) == 0
        report = json.loads((out / evaluation.REPORT_NAME).read_text())
        assert [os.path.basename(f) for f in report["data"]["files"]] == files
        assert report["data"]["images"] == images
        assert report["data"]["datasets"] == [prefix + "-dataset_info.json"]
        # The holes are filled with the model's mean pixel, whatever the data's is.
        assert report["model"]["config"]["data"]["mean_pixel"] == [0.5, 0.4, 0.3]
    capsys.readouterr()
    status = cli.main(cli.parse_args(common + ["--data", str(tmp_path / "shards" / "places*"),
                                               "--out", str(tmp_path / "bad")]))
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: --data: ") and "places-dataset_info.json" in err
    assert "expected TFRecord files" in err
