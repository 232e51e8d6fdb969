"""Masks from files (glcic_tf.mask_sets) and their use by make_dataset / make_eval_dataset."""

from pipeline_scripts import load_pipeline
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glcic_tf import config as cfg
from glcic_tf import data, mask_sets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, L = 64, 32  # the demo preset's image_size and local_size


def config(**overrides):
    values = {"data.deterministic": True, "data.shuffle_buffer": 8, "schedule.batch_size": 8}
    values.update(overrides)
    return cfg.get_preset("tiny").override(values)


def disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def save(path, hole, mode):
    """Writes a bool hole map as a mask image of `mode` (white = hole)."""
    gray = np.where(hole, 255, 0).astype(np.uint8)
    if mode == "L":
        image = Image.fromarray(gray)
    elif mode == "1":
        image = Image.fromarray(gray).convert("1")
    elif mode == "RGB":
        image = Image.fromarray(np.stack([gray] * 3, -1))
    elif mode == "RGBA":  # alpha varies and must be ignored
        alpha = np.where(np.arange(hole.shape[1]) % 2, 255, 40).astype(np.uint8)
        alpha = np.broadcast_to(alpha, hole.shape)
        image = Image.fromarray(np.stack([gray] * 3 + [alpha], -1), "RGBA")
    else:
        raise ValueError(mode)
    image.save(path)
    return path


# Masks of several sizes and modes; each a disc or an L (never a solid rectangle).
def _shapes():
    ell = np.zeros((48, 80), bool)
    ell[10:40, 20:30] = True
    ell[30:40, 20:60] = True
    return {
        "a-gray.png": (ell, "L"),
        "b-rgb.png": (disc(64, 64, 30, 34, 12), "RGB"),
        "c-rgba.png": (disc(100, 60, 50, 30, 20), "RGBA"),
        "d-1bit.png": (disc(128, 128, 64, 64, 30), "1"),
    }


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    truth = {}
    for name, (hole, mode) in _shapes().items():
        save(root / name, hole, mode)
        truth[name] = hole
    return root, truth


@pytest.fixture(scope="module")
def square_folder(tmp_path_factory):
    """Masks of exactly the training size: their crops are one of 8 flips/rotations."""
    root = tmp_path_factory.mktemp("square")
    holes = [disc(S, S, 20, 40, 9), disc(S, S, 44, 18, 6) | disc(S, S, 44, 30, 6)]
    ell = np.zeros((S, S), bool)
    ell[8:30, 8:14] = True
    ell[24:30, 8:40] = True
    holes.append(ell)
    for i, (hole, mode) in enumerate(zip(holes, ["L", "RGB", "1"])):
        save(root / f"m{i}.png", hole, mode)
    return root, holes


def dihedral(hole):
    """The 8 flips/rotations of a square hole map, as bytes of float32 [S, S, 1]."""
    out = set()
    for k in range(4):
        r = np.rot90(hole, k)
        for v in (r, r[::-1], r[:, ::-1], r[::-1, ::-1]):
            out.add(np.ascontiguousarray(v, np.float32)[..., None].tobytes())
    return out


def possible(holes):
    return set().union(*(dihedral(h) for h in holes))


def check_holes(mask, offset):
    """Values in {0, 1}, non-empty, patch inside the image and covering the bounding box."""
    assert mask.shape == (S, S, 1) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    ys, xs = np.nonzero(mask[..., 0])
    assert len(ys) > 0
    assert 0 <= offset.min() and offset.max() <= S - L
    for lo, hi, o in ((ys.min(), ys.max() + 1, offset[0]), (xs.min(), xs.max() + 1, offset[1])):
        if hi - lo <= L:
            assert o <= lo and hi <= o + L  # the whole extent is inside the patch
        else:  # larger than the patch: the patch lies inside the extent, centred
            assert lo <= o and o + L <= hi
            assert abs((o + L / 2) - (lo + hi) / 2) <= 1


def is_solid_rectangle(mask):
    ys, xs = np.nonzero(mask[..., 0])
    return mask.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


# --- per-mask ops ----------------------------------------------------------------------------


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


def test_resize_mask_shorter_side_area_threshold():
    hole = np.zeros((8, 16, 1), np.float32)
    hole[0:4, 0:2] = 1  # 2x2 blocks after halving: full, full
    hole[4:6, 4:8] = 1  # half of each 2x2 footprint -> hole (>= 0.5)
    hole[6, 8] = 1      # a quarter -> known
    out = mask_sets.resize_mask_shorter_side(tf.constant(hole), 4).numpy()[..., 0]
    expected = np.zeros((4, 8), np.float32)
    expected[0:2, 0] = 1
    expected[2, 2:4] = 1
    np.testing.assert_array_equal(out, expected)


def test_local_offset_for_exact_values():
    mask = np.zeros((S, S, 1), np.float32)
    mask[20:30, 50:61] = 1  # rows [20, 30): start (20 + 30 - 32) // 2 = 9; cols clip to 32
    np.testing.assert_array_equal(mask_sets.local_offset_for(tf.constant(mask), L).numpy(),
                                  [9, 32])
    mask[:] = 1  # larger than the patch: centred
    np.testing.assert_array_equal(mask_sets.local_offset_for(tf.constant(mask), L).numpy(),
                                  [16, 16])


@pytest.mark.parametrize("random", [True, False])
def test_file_holes_eager_and_in_map(mask_folder, random):
    root, _ = mask_folder
    c = config()
    names = sorted(os.listdir(root))
    encoded = tf.stack([tf.io.read_file(str(root / n)) for n in names])
    seeds = tf.constant([[7, i] for i in range(len(names))], tf.int64)

    def op(e, s):
        return mask_sets.file_holes(e, S, c.masks, s, random=random)

    mapped = list(tf.data.Dataset.from_tensor_slices((encoded, seeds)).map(op))
    for i in range(len(names)):
        eager = op(encoded[i], seeds[i])
        for key in eager:
            np.testing.assert_array_equal(eager[key].numpy(), mapped[i][key].numpy())
        check_holes(eager["mask"].numpy(), eager["local_offset"].numpy())


def test_eval_crop_is_the_centre_square(mask_folder):
    root, truth = mask_folder
    out = mask_sets.file_holes(tf.io.read_file(str(root / "b-rgb.png")), S, config().masks,
                               tf.constant([0, 0]), random=False)
    np.testing.assert_array_equal(out["mask"].numpy()[..., 0], truth["b-rgb.png"])
    assert bool(out["from_file"])


def test_empty_crops_retry_then_fall_back_to_a_rectangle(tmp_path):
    c = config()
    blank = tf.io.encode_png(np.zeros((40, 40, 1), np.uint8))
    out = mask_sets.file_holes(blank, S, c.masks, tf.constant([0, 1]))
    assert not bool(out["from_file"])
    check_holes(out["mask"].numpy(), out["local_offset"].numpy())
    assert is_solid_rectangle(out["mask"].numpy())
    # A small hole at one end of a long strip: most crops miss it.
    strip = np.zeros((32, 320), bool)
    strip[10:20, 2:20] = True
    encoded = tf.io.encode_png(np.where(strip, 255, 0).astype(np.uint8)[..., None])
    sources = []
    for i in range(32):
        out = mask_sets.file_holes(encoded, S, c.masks, tf.constant([3, i]))
        mask = out["mask"].numpy()
        check_holes(mask, out["local_offset"].numpy())
        sources.append(bool(out["from_file"]))
        if not sources[-1]:
            assert is_solid_rectangle(mask)
    assert any(sources) and not all(sources)


# --- streams and make_dataset --------------------------------------------------------------------


def test_file_holes_dataset_invariants(mask_folder):
    root, _ = mask_folder
    c = config()
    mask_set = mask_sets.open_mask_set(str(root / "*.png"))
    assert mask_set.format == "image" and len(mask_set.files) == 4
    batch = next(iter(mask_sets.file_holes_dataset(mask_set, S, c.masks, seed=1).batch(32)))
    for mask, offset in zip(batch["mask"].numpy(), batch["local_offset"].numpy()):
        check_holes(mask, offset)
    assert batch["from_file"].numpy().mean() > 0.8
    # Flips, rotations and crops: many distinct masks from 4 files.
    assert len({m.tobytes() for m in batch["mask"].numpy()}) > 12


def holes_from(c, seed=0, n=64, mask_set=None):
    ds = mask_sets.holes_dataset(c.masks, S, seed=seed, mask_set=mask_set).batch(n)
    return next(iter(ds))["mask"].numpy()


def test_ratio_mix(square_folder):
    root, holes = square_folder
    allowed = possible(holes)
    pattern = str(root / "*.png")
    only_files = holes_from(config(**{"masks.mask_files": pattern, "masks.mask_file_ratio": 1.0}))
    assert all(m.tobytes() in allowed for m in only_files)
    assert len({m.tobytes() for m in only_files}) > 8  # flips and rotations happen
    none = holes_from(config(**{"masks.mask_files": pattern, "masks.mask_file_ratio": 0.0}))
    assert not any(m.tobytes() in allowed for m in none)
    assert all(is_solid_rectangle(m) for m in none)
    half = holes_from(config(**{"masks.mask_files": pattern, "masks.mask_file_ratio": 0.5,
                                "masks.kind": "freeform"}))
    share = np.mean([m.tobytes() in allowed for m in half])
    assert 0.3 <= share <= 0.7
    again = holes_from(config(**{"masks.mask_files": pattern, "masks.mask_file_ratio": 0.5,
                                 "masks.kind": "freeform"}))
    np.testing.assert_array_equal(half, again)  # a seeded stream


def write_shard(path, count=8):
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            pixels = rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)
            feature = {
                data.FEATURE_ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_png(pixels).numpy()])),
                data.FEATURE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[f"img{i}".encode()])),
            }
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    return write_shard(tmp_path_factory.mktemp("shards") / "train-0.tfrecord")


def test_make_dataset_with_file_masks(shard, square_folder):
    root, holes = square_folder
    allowed = possible(holes)
    c = config(**{"masks.mask_files": str(root / "*.png"), "masks.mask_file_ratio": 1.0})
    ds = data.make_dataset(shard, c)
    assert set(ds.element_spec) == set(data.ELEMENT_KEYS)
    assert ds.element_spec["mask"].shape == (8, S, S, 1)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds.take(2)]
    for batch in batches:
        for image, mask, masked, offset in zip(batch["image"], batch["mask"], batch["masked"],
                                               batch["local_offset"]):
            assert mask.tobytes() in allowed
            check_holes(mask, offset)
            hole = mask[..., 0] == 1
            np.testing.assert_allclose(masked[hole], np.broadcast_to(
                np.float32(c.data.mean_pixel), (hole.sum(), 3)), atol=1e-6)
            np.testing.assert_array_equal(masked[~hole], image[~hole])
    # FILE auto-sharding cannot split the zipped hole stream: workers share by element.
    assert (ds.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    per_replica = data.make_dataset(shard, c, input_context=context)
    assert next(iter(per_replica))["mask"].shape == (4, S, S, 1)
    again = [{k: v.numpy() for k, v in b.items()} for b in data.make_dataset(shard, c).take(2)]
    for a, b in zip(batches, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # Without mask files the stream is exactly what it was before (same seeds, same holes).
    plain = config()
    with_files_unused = config(**{"masks.mask_files": str(root / "*.png")})
    a = next(iter(data.make_dataset(shard, plain)))["mask"].numpy()
    b = next(iter(data.make_dataset(shard, with_files_unused)))["mask"].numpy()
    np.testing.assert_array_equal(a, b)


# --- evaluation ----------------------------------------------------------------------------------


def eval_masks(shard, c, **kwargs):
    out = {}
    for batch in data.make_eval_dataset(shard, c, mask_kind="file", **kwargs):
        for key, mask, offset in zip(batch["key"].numpy(), batch["mask"].numpy(),
                                     batch["local_offset"].numpy()):
            out[key] = (mask, offset)
    return out


def test_eval_file_masks_identical_across_builds(shard, square_folder):
    root, holes = square_folder
    c = config(**{"masks.mask_files": str(root / "*.png")})
    first = eval_masks(shard, c, seed=1, batch_size=3)
    second = eval_masks(shard, c, seed=1, batch_size=8)
    assert first.keys() == second.keys() and len(first) == 8
    unflipped = {h.astype(np.float32)[..., None].tobytes() for h in holes}
    for key, (mask, offset) in first.items():
        np.testing.assert_array_equal(mask, second[key][0])
        np.testing.assert_array_equal(offset, second[key][1])
        assert mask.tobytes() in unflipped  # no flip, no rotation, centre crop
        check_holes(mask, offset)
    assert len({m.tobytes() for m, _ in first.values()}) >= 2
    other = eval_masks(shard, c, seed=2)
    assert any(not np.array_equal(other[k][0], first[k][0]) for k in first)


def test_eval_rejects_file_kind_without_mask_files(shard):
    with pytest.raises(ValueError, match="mask_kind='file' needs masks.mask_files"):
        data.make_eval_dataset(shard, config(), mask_kind="file")


# --- TFRecord mask sets --------------------------------------------------------------------------


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
    assert mask_sets.main(["--masks", str(root / "*.png"), "--output", output]) == 0
    assert "wrote 3 masks" in capsys.readouterr().out
    assert mask_sets.main(["--masks", output, "--check"]) == 0
    assert mask_sets.find_bad_masks(output) == []


# --- errors and configuration --------------------------------------------------------------------


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
