"""pipelines/complete.py: folders of images and masks, random holes, errors in one line,
--precision, --maxdim 0 at full resolution (the one run as a real process) and its argument
checks."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from glcic_tf.benchmarks.completion import psnr
from glcic_tf.inference.completer import Completer

from helpers.inference import gradient_photo, holes, save_png
from helpers.scripts import REPO, load_pipeline


def _load_cli():
    return load_pipeline("complete")


def test_cli_completes_a_folder_with_a_folder_of_masks(tmp_path, tiny_run):
    path, _, _ = tiny_run
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    sizes = {"a": (37, 53), "b": (64, 48)}
    hole_of = {}
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        save_png(tmp_path / "images" / f"{stem}.png", gradient_photo(h, w, seed=i))
        hole = np.zeros((h, w), bool)
        hole[5:25, 10:30] = True
        hole_of[stem] = hole
    save_png(tmp_path / "masks" / "a.png", np.where(hole_of["a"], 255, 0).astype(np.uint8))
    rgba = np.zeros((64, 48, 4), np.uint8)
    rgba[hole_of["b"]] = 255
    save_png(tmp_path / "masks" / "b.png", rgba)
    out_dir = tmp_path / "out"
    cli = _load_cli()
    assert cli.main(cli.parse_args(["--model", path, "--image", str(tmp_path / "images"),
                                    "--mask", str(tmp_path / "masks"),
                                    "--out", str(out_dir)])) == 0
    assert sorted(os.listdir(out_dir)) == ["a.png", "b.png"]
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        out = np.asarray(Image.open(out_dir / f"{stem}.png"))
        assert out.shape == (h, w, 3)
        np.testing.assert_array_equal(out[~hole_of[stem]],
                                      gradient_photo(h, w, seed=i)[~hole_of[stem]])


def test_cli_random_holes_write_the_mask_and_are_seeded(tmp_path, tiny_run):
    path, _, _ = tiny_run
    cli = _load_cli()
    image_path = save_png(tmp_path / "in.png", gradient_photo(150, 170))
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
    image = gradient_photo(150, 170)
    np.testing.assert_array_equal(outs[0][0][~outs[0][1]], image[~outs[0][1]])


def test_cli_errors_exit_nonzero_with_one_line(tmp_path, tiny_run, capsys):
    path, _, _ = tiny_run
    cli = _load_cli()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    save_png(tmp_path / "images" / "cat.png", gradient_photo(32, 32))
    code = cli.main(cli.parse_args(["--model", path, "--image", str(tmp_path / "images"),
                                    "--mask", str(tmp_path / "masks"),
                                    "--out", str(tmp_path / "out")]))
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and "cat.png: no mask for this image" in err
    code = cli.main(cli.parse_args(["--model", str(tmp_path / "nope"), "--image", "x.png",
                                    "--out", "y.png"]))
    assert code == 1 and "model directory not found" in capsys.readouterr().err


def test_cli_precision_bfloat16_completes_a_run_dir(tmp_path, tiny_run, capsys):
    path, _, _ = tiny_run
    cli = _load_cli()
    image = gradient_photo(60, 76)
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


def test_cli_maxdim_0_completes_at_full_resolution(tmp_path, tiny_run):
    run_dir, config, model = tiny_run
    image = gradient_photo(330, 250, seed=5, noise=6.0)
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
    want = Completer.from_model(config, model).complete(image, hole, maxdim=0)
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
