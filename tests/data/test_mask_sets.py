"""The user's mask sets (glcic_tf.data.mask_sets): decoding every mode, TFRecord mask sets and the
`pipelines/make_mask_set.py` CLI, errors naming the file or glob, and the config fields."""

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf.data import input_pipeline as data
from glcic_tf.data import mask_sets

from helpers.data import eval_masks, holes_from, possible, tiny_data_config
from helpers.scripts import load_pipeline


def config(**overrides):
    return tiny_data_config(8, **overrides)


# --- decoding --------------------------------------------------------------------------------


def test_decode_mask_all_modes(mask_folder):
    root, truth = mask_folder
    for name, hole in truth.items():
        mask = mask_sets.decode_mask(tf.io.read_file(str(root / name))).numpy()
        assert mask.shape == hole.shape + (1,) and mask.dtype == np.float32
        np.testing.assert_array_equal(mask[..., 0], hole.astype(np.float32), err_msg=name)
    inverted = mask_sets.decode_mask(tf.io.read_file(str(root / "a-gray.png")), invert=True)
    np.testing.assert_array_equal(inverted.numpy()[..., 0], (~truth["a-gray.png"]).astype(float))


def test_decode_mask_threshold_is_one_half():
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    mask = mask_sets.decode_mask(tf.io.encode_png(gray[..., None])).numpy()
    np.testing.assert_array_equal(mask[0, :, 0], [0, 0, 1, 1])


# --- TFRecord mask sets ----------------------------------------------------------------------


def test_tfrecord_mask_set_round_trip(tmp_path, shard, square_folder):
    root, holes = square_folder
    output = str(tmp_path / "masks.tfrecord")
    assert mask_sets.write_mask_tfrecords(str(root / "*.png"), output) == 3
    from_records = mask_sets.open_mask_set(output)
    assert from_records.format == "tfrecord"
    from_images = mask_sets.open_mask_set(str(root / "*.png"))
    originals = [open(p, "rb").read() for p in from_images.files]
    assert mask_sets.read_encoded_masks(from_records) == originals
    # Training stream from the records: every mask is a flip/rotation of a file mask.
    c = config(**{"masks.mask_files": output, "masks.mask_file_ratio": 1.0})
    allowed = possible(holes)
    assert all(m.tobytes() in allowed for m in holes_from(c, n=16, mask_set=from_records))
    # Evaluation: records are in the sorted files' order, so the holes are the same.
    by_records = eval_masks(shard, c, seed=5)
    by_images = eval_masks(shard, config(**{"masks.mask_files": str(root / "*.png")}), seed=5)
    for key in by_images:
        np.testing.assert_array_equal(by_records[key][0], by_images[key][0])


def test_cli_writes_and_checks(tmp_path, square_folder, capsys):
    root, _ = square_folder
    output = str(tmp_path / "cli.tfrecord")
    cli = load_pipeline("make_mask_set")
    assert cli.main(cli.parse_args(["--masks", str(root / "*.png"), "--output", output])) == 0
    assert "wrote 3 masks" in capsys.readouterr().out
    assert cli.main(cli.parse_args(["--masks", output, "--check"])) == 0
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--masks", output])
    assert exit_info.value.code == 2 and "give --output (or --check)" in capsys.readouterr().err
    assert mask_sets.find_bad_masks(output) == []


# --- errors and configuration ----------------------------------------------------------------


def test_empty_glob_names_the_glob(tmp_path, shard):
    missing = str(tmp_path / "none-*.png")
    with pytest.raises(FileNotFoundError, match="no mask file matches .*none-"):
        mask_sets.open_mask_set(missing)
    c = config(**{"masks.mask_files": missing, "masks.mask_file_ratio": 0.5})
    with pytest.raises(FileNotFoundError, match="none-"):
        data.make_dataset(shard, c)
    with pytest.raises(FileNotFoundError, match="none-"):
        data.make_eval_dataset(shard, c, mask_kind="file")


def test_bad_files_are_named(tmp_path):
    (tmp_path / "good.png").write_bytes(tf.io.encode_png(np.zeros((4, 4, 1), np.uint8)).numpy())
    (tmp_path / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"mask file .*bad.png cannot be decoded"):
        mask_sets.open_mask_set(str(tmp_path / "*.png"))
    with pytest.raises(ValueError, match=r"mask file .*bad.png cannot be decoded"):
        mask_sets.write_mask_tfrecords(str(tmp_path / "*.png"), str(tmp_path / "out.tfrecord"))
    [(name, _)] = mask_sets.find_bad_masks(str(tmp_path / "*.png"))
    assert name.endswith("bad.png")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"notes.txt .*neither an image"):
        mask_sets.open_mask_set(str(tmp_path / "*"))
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "m.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match="mixes images .* and TFRecords"):
        mask_sets.open_mask_set(str(tmp_path / "*"))


@pytest.mark.parametrize("overrides, message", [
    ({"masks.mask_file_ratio": 1.5, "masks.mask_files": "m/*.png"},
     r"masks.mask_file_ratio must be in \[0, 1\], got 1.5"),
    ({"masks.mask_file_ratio": -0.1}, r"mask_file_ratio must be in \[0, 1\]"),
    ({"masks.mask_file_ratio": 0.3}, "mask_file_ratio is 0.3 but masks.mask_files is empty"),
    ({"masks.mask_files": 3}, "masks.mask_files must be a string"),
])
def test_config_validation(overrides, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.get_preset("tiny").override(overrides)


def test_config_json_round_trip_with_mask_files():
    c = config(**{"masks.mask_files": "masks/*.png", "masks.mask_file_ratio": 0.25,
                  "masks.mask_file_invert": True})
    assert cfg.GLCICConfig.from_json(c.to_json()) == c


def test_train_flags_map_to_config():
    train = load_pipeline("train")
    args = train.parse_args(["--mask-files", "masks/*.png", "--mask-file-ratio", "0.4"])
    c = train.resolve_config(args)
    assert (c.masks.mask_files, c.masks.mask_file_ratio) == ("masks/*.png", 0.4)
