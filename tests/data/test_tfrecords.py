"""The Beam pipeline (glcic_tf.data.tfrecords) and pipelines/make_tfrecords.py (DirectRunner).

Pipeline runs are expensive (seconds), so one module-scoped fixture runs the library twice on
the same inputs (round trip, split, mean, determinism) and one test runs the CLI in-process on a
folder of awkward files.
"""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf import config as cfg
from glcic_tf.data import datasets
from glcic_tf.data import input_pipeline
from glcic_tf.data import normalize
from glcic_tf.data import schema
from glcic_tf.data import selections
from glcic_tf.data import tfrecords

from helpers.data import bomb_png
from helpers.images import encode, noise, png_bytes
from helpers.scripts import load_pipeline


def read_examples(pattern):
    """{key: dict of parsed features + decoded pixels} for all shards matching `pattern`."""
    spec = {
        schema.FEATURE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        schema.FEATURE_FORMAT: tf.io.FixedLenFeature([], tf.string),
        schema.FEATURE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        schema.FEATURE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        schema.FEATURE_CHANNELS: tf.io.FixedLenFeature([], tf.int64),
        schema.FEATURE_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    out = {}
    files = tf.io.gfile.glob(pattern)
    for record in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(record, spec)
        key = ex[schema.FEATURE_KEY].numpy().decode()
        out[key] = {
            "format": ex[schema.FEATURE_FORMAT].numpy().decode(),
            "height": int(ex[schema.FEATURE_HEIGHT]),
            "width": int(ex[schema.FEATURE_WIDTH]),
            "channels": int(ex[schema.FEATURE_CHANNELS]),
            "encoded": ex[schema.FEATURE_ENCODED].numpy(),
            # TensorFlow's decoder, as training uses it.
            "pixels": tf.io.decode_image(ex[schema.FEATURE_ENCODED], channels=3).numpy(),
        }
    return out


# --- paths, keys and arguments ---------------------------------------------------------------


def test_split_and_key_are_pure_functions_of_the_path():
    assert normalize.image_key("/a/b.jpg") == normalize.image_key("/a/b.jpg")
    assert len(normalize.image_key("/a/b.jpg")) == 16
    assert normalize.image_key("/data/x/b.jpg", "/data/x") == normalize.image_key("b.jpg")
    keys = [normalize.image_key(f"/d/{i}.png") for i in range(2000)]
    val = [k for k in keys if tfrecords.split_of(k, 0.25) == "val"]
    assert 400 < len(val) < 600
    assert all(tfrecords.split_of(k, 0.0) == "train" for k in keys)


def test_bad_arguments(tmp_path):
    missing, out = tmp_path / "nonexistent", str(tmp_path / "x")
    with pytest.raises(ValueError, match="val_fraction must be in"):
        tfrecords.run([str(missing / "*")], out, val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="matches no files"):
        tfrecords.run([str(missing / "dir" / "*.jpg")], out)
    with pytest.raises(TypeError, match="list of globs"):
        tfrecords.run(str(missing / "*.jpg"), out)
    assert os.listdir(tmp_path) == []  # refused before anything is written


# --- One shared pipeline run (twice, for determinism) ----------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfr")
    src = root / "images"
    src.mkdir()
    arrays = {}
    for i in range(12):
        a = noise(128 + 3 * i, 160 - 2 * i, 100 + i)
        path = str(src / f"img_{i:02d}.png")
        Image.fromarray(a).save(path)
        arrays[path] = a
    for i in range(2):  # JPEG sources: kept as is, compared with tolerance only
        Image.fromarray(noise(140, 150, 200 + i)).save(str(src / f"photo_{i}.jpg"), quality=92)
    infos = [tfrecords.run([str(src / "*.png"), str(src / "*.jpg"), str(src / "img_0*.png")],
                           str(root / f"out{r}" / "ds"), shards=3, val_fraction=0.3,
                           key_root=str(src))  # keys (and the split) independent of tmp_path
             for r in range(2)]
    return {"root": root, "src": src, "arrays": arrays, "infos": infos}


def test_round_trip_pixels_and_features(dataset):
    out = dataset["root"] / "out0"
    examples = {**read_examples(str(out / "ds-train-*.tfrecord")),
                **read_examples(str(out / "ds-val-*.tfrecord"))}
    assert len(examples) == 14  # img_0*.png matched twice: written once
    for path, array in dataset["arrays"].items():
        ex = examples[normalize.image_key(path, str(dataset["src"]))]
        assert (ex["format"], ex["channels"]) == ("png", 3)
        assert (ex["height"], ex["width"]) == array.shape[:2]
        np.testing.assert_array_equal(ex["pixels"], array)
        with open(path, "rb") as f:
            assert ex["encoded"] == f.read()  # 8-bit RGB PNG: original bytes kept
    for i in range(2):
        path = str(dataset["src"] / f"photo_{i}.jpg")
        ex = examples[normalize.image_key(path, str(dataset["src"]))]
        assert (ex["format"], ex["height"], ex["width"]) == ("jpeg", 140, 150)


def test_shards_rejects_and_info_files(dataset):
    out = dataset["root"] / "out0"
    info = datasets.read_dataset_info(str(out))
    assert info["num_shards"]["train"] + info["num_shards"]["val"] == 3
    for split in ("train", "val"):
        pattern = info["shard_patterns"][split]
        files = sorted(p.name for p in out.glob(pattern))
        assert files == info["shard_files"][split]
        assert files and all(f.startswith(f"ds-{split}-") for f in files)
    assert info["counts"]["train"] + info["counts"]["val"] == 14
    assert info["num_rejects"] == 0 and info["rejects_by_reason"] == {}
    assert (out / "ds-rejects.jsonl").read_text() == ""
    assert info["min_side"] == 128
    heights = [a.shape[0] for a in dataset["arrays"].values()] + [140, 140]
    sizes = info["size_stats"]
    assert min(sizes["train"]["height"]["min"], sizes["val"]["height"]["min"]) == min(heights)
    assert max(sizes["train"]["height"]["max"], sizes["val"]["height"]["max"]) == max(heights)


def test_split_follows_hash_and_is_deterministic(dataset):
    keys = []
    for r in range(2):
        out = dataset["root"] / f"out{r}"
        keys.append({s: set(read_examples(str(out / f"ds-{s}-*.tfrecord"))) for s in
                     ("train", "val")})
    assert keys[0] == keys[1]
    assert keys[0]["val"] and keys[0]["train"]
    for split, ks in keys[0].items():
        assert all(tfrecords.split_of(k, 0.3) == split for k in ks)
    assert dataset["infos"][0]["counts"] == dataset["infos"][1]["counts"]


def test_mean_pixel_matches_numpy(dataset):
    out = dataset["root"] / "out0"
    train_keys = set(read_examples(str(out / "ds-train-*.tfrecord")))
    sources = [str(p) for p in sorted(dataset["src"].iterdir())]
    train = [np.asarray(Image.open(p).convert("RGB")) for p in sources
             if normalize.image_key(p, str(dataset["src"])) in train_keys]
    assert len(train) == len(train_keys)
    pixels = np.concatenate([a.reshape(-1, 3) for a in train]).astype(np.float64)
    info = datasets.read_dataset_info(str(out))
    np.testing.assert_allclose(info["mean_pixel"], pixels.mean(axis=0) / 255.0, rtol=1e-12)
    assert info["mean_pixel"] == info["split_mean_pixel"]["train"]


# --- The CLI on a folder of awkward files ----------------------------------------------------


def test_cli_bad_files_folder(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(7)
    good = {}  # name -> (height, width, format)

    full = encode(noise(200, 200, 1), "JPEG", quality=90)
    (src / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (src / "text.jpg").write_text("this is not an image\n")
    (src / "empty.png").write_bytes(b"")
    (src / "tiny.png").write_bytes(png_bytes(noise(1, 1, 0)))
    (src / "bomb.png").write_bytes(bomb_png())
    bad = {"truncated.jpg": "truncated", "text.jpg": "not_an_image", "empty.png": "empty",
           "tiny.png": "too_small", "bomb.png": "decompression_bomb"}

    sixteen = rng.integers(0, 65536, (130, 140)).astype(np.uint16)
    (src / "gray16.png").write_bytes(png_bytes(sixteen))
    good["gray16.png"] = (130, 140, "png")
    (src / "gray.png").write_bytes(png_bytes(rng.integers(0, 256, (131, 140), np.uint8), "L"))
    good["gray.png"] = (131, 140, "png")
    rgba = np.dstack([noise(132, 140, 2), rng.integers(0, 256, (132, 140), np.uint8)])
    (src / "rgba.png").write_bytes(png_bytes(rgba, "RGBA"))
    good["rgba.png"] = (132, 140, "png")
    cmyk = Image.fromarray(noise(133, 140, 3)).convert("CMYK")
    (src / "cmyk.jpg").write_bytes(encode(np.asarray(cmyk), "JPEG", "CMYK"))
    good["cmyk.jpg"] = (133, 140, "jpeg")
    Image.fromarray(noise(134, 140, 4)).quantize(32).save(src / "palette.png")
    good["palette.png"] = (134, 140, "png")
    exif = Image.Exif()
    exif[0x0112] = 6
    (src / "rotated.jpg").write_bytes(
        encode(noise(135, 200, 5), "JPEG", exif=exif.tobytes()))
    good["rotated.jpg"] = (200, 135, "jpeg")  # rotated: height and width swap
    (src / "plain.jpg").write_bytes(encode(noise(136, 140, 6), "JPEG"))
    good["plain.jpg"] = (136, 140, "jpeg")

    out = tmp_path / "out" / "mixed"
    cli = load_pipeline("make_tfrecords")
    capsys.readouterr()
    code = cli.main(cli.parse_args(
        ["--input", str(src / "*.png"), str(src / "*.jpg"), "--output", str(out),
         "--val-fraction", "0.2", "--shards", "2", "--direct_num_workers", "1"]))
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]

    rejects = [json.loads(line) for line in
               (tmp_path / "out" / "mixed-rejects.jsonl").read_text().splitlines()]
    assert {os.path.basename(r["path"]): r["reason"] for r in rejects} == bad
    info = datasets.read_dataset_info(str(tmp_path / "out"))
    expected_counts = {}
    for reason in bad.values():
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert info["rejects_by_reason"] == expected_counts
    assert info["counts"]["train"] + info["counts"]["val"] == len(good)

    examples = {**read_examples(str(tmp_path / "out" / "mixed-train-*.tfrecord")),
                **read_examples(str(tmp_path / "out" / "mixed-val-*.tfrecord"))}
    assert len(examples) == len(good)
    for name, (h, w, fmt) in good.items():
        ex = examples[normalize.image_key(str(src / name))]
        assert (ex["height"], ex["width"], ex["format"], ex["channels"]) == (h, w, fmt, 3), name
        assert ex["pixels"].shape == (h, w, 3)
    gray16 = examples[normalize.image_key(str(src / "gray16.png"))]["pixels"]
    np.testing.assert_array_equal(gray16[..., 0], np.rint(sixteen * (255 / 65535)))
    assert json.loads(stdout)["num_rejects"] == len(bad)


# --- Datasets: one per prefix, never overwritten silently, shards sized by bytes, progress ---


def _photos(folder, count, seed, colour=None, size=(132, 130)):
    """Random (incompressible, ~51 KB) or constant-colour 8-bit RGB PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        a = (np.full((*size, 3), colour, np.uint8) if colour is not None else
             rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        Image.fromarray(a).save(str(folder / f"p{seed}_{i:02d}.png"))
    return str(folder / "*.png")


def test_plan_shards_by_bytes_per_split():
    files = {f"/d/{i}.jpg": 3 * 2**20 for i in range(40)}  # 120 MB in all
    val = sum(tfrecords.split_of(normalize.image_key(p), 0.25) == "val" for p in files)
    plan = tfrecords.plan_shards(files, val_fraction=0.25, shard_size_mb=10)
    assert plan == {"train": -(-(40 - val) * 3 // 10), "val": -(-val * 3 // 10)}
    assert tfrecords.plan_shards(files, val_fraction=0.0, shard_size_mb=1) == {
        "train": 40, "val": 1}  # at most one shard per file, at least one per split
    assert tfrecords.plan_shards(files, val_fraction=0.25) == {"train": 1, "val": 1}
    with pytest.raises(ValueError, match="shard_size_mb must be > 0"):
        tfrecords.plan_shards(files, val_fraction=0.1, shard_size_mb=0)


def test_multi_shard_dataset_read_back_in_full(tmp_path):
    pattern = _photos(tmp_path / "img", 14, seed=1)
    lines = []
    info = tfrecords.run([pattern], str(tmp_path / "out" / "ds"), shard_size_mb=0.1,
                         val_fraction=0.25, progress_every=0.05, log=lines.append,
                         key_root=str(tmp_path))  # the split does not depend on tmp_path
    files = {s: sorted(str(p) for p in (tmp_path / "out").glob(f"ds-{s}-*.tfrecord"))
             for s in ("train", "val")}
    assert info["num_shards"] == {s: len(files[s]) for s in files}
    assert info["num_shards"]["train"] >= 3
    assert info["shard_bytes"] == {s: sum(os.path.getsize(f) for f in files[s]) for s in files}
    assert info["shard_size_mb"] == 0.1 and info["format_version"] == 2
    assert all(os.path.getsize(f) < 3 * 0.1 * 2**20 for f in files["train"])

    config = cfg.get_preset("tiny").override({"data.deterministic": True})
    prefix = str(tmp_path / "out" / "ds")
    expected = {s: sorted(read_examples(str(tmp_path / "out" / f"ds-{s}-*.tfrecord")))
                for s in ("train", "val")}
    assert len(expected["train"]) + len(expected["val"]) == 14
    for split in ("train", "val"):
        selection = selections.select(prefix, split)
        # One pass of the training input (interleaved shards) and of the evaluation input.
        files = list(selection.files)
        keys = [k.decode() for b in input_pipeline.make_dataset(files, config, training=False,
                                                                batch_size=1)
                for k in b["key"].numpy()]
        assert sorted(keys) == expected[split]  # nothing lost, nothing doubled
        keys = [k.decode() for b in input_pipeline.make_eval_dataset(files, config)
                for k in b["key"].numpy()]
        assert sorted(keys) == expected[split]
    # Progress lines while running (the pipeline takes well over 0.05 s), then the summary.
    assert len(lines) >= 2, lines
    assert lines[-1].startswith("make_tfrecords: 14 files in ") and "images/s" in lines[-1]
    assert "train (" in lines[-1] and "ds-dataset_info.json" in lines[-1]
    for line in lines[:-1]:
        assert re.match(r"make_tfrecords: \d+/14 files \(\d+%\), \d+ written, \d+ rejected, "
                        r"[\d.]+ images/s", line), line


def test_two_datasets_in_one_folder_and_the_overwrite_refusal(tmp_path, capsys):

    out = tmp_path / "shards"
    red = _photos(tmp_path / "red", 4, seed=2, colour=(220, 20, 20))
    blue = _photos(tmp_path / "blue", 3, seed=3, colour=(20, 20, 220))
    # Keys relative to tmp_path: the hash split (which files are train) is the same every run.
    first = tfrecords.run([red], str(out / "urban"), shards=3, val_fraction=0.3,
                          key_root=str(tmp_path))
    tfrecords.run([blue], str(out / "bsd"), val_fraction=0.3, key_root=str(tmp_path))
    assert sorted(p.name for p in out.glob("*.json")) == ["bsd-dataset_info.json",
                                                          "urban-dataset_info.json"]
    assert selections.select(str(out / "urban-train-*"), "train").mean_pixel[0] > 0.8
    assert selections.select(str(out / "bsd"), "train").mean_pixel[2] > 0.8

    cli = load_pipeline("make_tfrecords")
    argv = ["--input", blue, "--output", str(out / "urban"), "--progress-every", "0",
            "--shards", "2", "--key-root", str(tmp_path)]
    capsys.readouterr()
    assert cli.main(cli.parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset ") and "urban already exists" in err
    assert "--overwrite" in err
    assert (out / "urban-dataset_info.json").read_text() == json.dumps(first, indent=2) + "\n"

    assert cli.main(cli.parse_args(argv + ["--overwrite"])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metadata"] == str(out / "urban-dataset_info.json")
    shards = sorted(p.name for p in out.glob("urban-*.tfrecord"))
    assert shards == ["urban-train-00000-of-00001.tfrecord", "urban-val-00000-of-00001.tfrecord"]
    assert selections.select(str(out / "urban"), "train").mean_pixel[2] > 0.8  # the new data
    assert (out / "bsd-dataset_info.json").exists() and list(out.glob("bsd-train-*"))
