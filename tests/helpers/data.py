"""Shards of small photo-like images (good and deliberately corrupt) and mask files, for the
tests of glcic_tf.data (tests/data/)."""

import struct
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image

from helpers.images import example_bytes

# --- image shards --------------------------------------------------------------------------------

# Tiny images of several shapes (portrait, landscape, square), JPEG and PNG, one grayscale.
SHAPES = [(48, 72), (72, 48), (56, 56), (60, 90), (96, 64), (50, 70)]


def photo(rng, height, width, channels=3):
    """Smooth, photo-like content so that JPEG artefacts stay small."""
    small = rng.uniform(0, 255, (4, 4, channels)).astype(np.float32)
    return tf.cast(tf.image.resize(small, [height, width]), tf.uint8).numpy()


def good_records(rng, shard, count):
    """`count` records keyed `shard{shard}/img{i}`: shapes cycle through SHAPES, JPEG and PNG
    alternate, record 1 is a grayscale PNG."""
    records = []
    for i in range(count):
        h, w = SHAPES[i % len(SHAPES)]
        if i == 1:
            records.append(example_bytes(f"shard{shard}/img{i}", photo(rng, h, w, channels=1)))
        else:
            records.append(example_bytes(f"shard{shard}/img{i}", photo(rng, h, w),
                                         "png" if i % 2 else "jpeg"))
    return records


def write_records(path, records):
    """Writes serialized records (good or deliberately malformed) as one TFRecord file."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def write_photo_shards(root, num_shards, per_shard, seed=0):
    """`train-SSSSS-of-NNNNN.tfrecord` shards of `good_records`; returns their glob."""
    rng = np.random.default_rng(seed)
    for s in range(num_shards):
        write_records(root / f"train-{s:05d}-of-{num_shards:05d}.tfrecord",
                      good_records(rng, s, per_shard))
    return str(root / "train-*.tfrecord")


def image_record_without_image(encoded: bytes, key: str) -> bytes:
    """A record with `image/encoded` and `image/key` only, whatever the bytes (e.g. no image)."""
    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": feature(encoded), "image/key": feature(key.encode()),
    })).SerializeToString()


def write_corrupt_shards(root):
    """A clean shard, one with a garbage record and an undecodable image, one cut mid-record."""
    rng = np.random.default_rng(1)
    good = good_records(rng, 0, count=4)
    write_records(root / "a-clean.tfrecord", good)
    write_records(root / "b-garbage.tfrecord",
                  [good[0], b"\x00not an example\xff" * 7,
                   image_record_without_image(b"not an image", "bad"), good[2]])
    write_records(root / "c-truncated.tfrecord", good)
    raw = (root / "c-truncated.tfrecord").read_bytes()
    (root / "c-truncated.tfrecord").write_bytes(raw[:len(raw) - 40])  # inside the last record
    return root


# --- mask files ----------------------------------------------------------------------------------

S, L = 64, 32  # the tiny preset's image_size and local_size


def disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def save_mask(path, hole, mode):
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


def write_mask_folder(root):
    """Masks of several sizes and modes, each a disc or an L (never a solid rectangle);
    returns (root, {name: bool hole map})."""
    ell = np.zeros((48, 80), bool)
    ell[10:40, 20:30] = True
    ell[30:40, 20:60] = True
    shapes = {
        "a-gray.png": (ell, "L"),
        "b-rgb.png": (disc(64, 64, 30, 34, 12), "RGB"),
        "c-rgba.png": (disc(100, 60, 50, 30, 20), "RGBA"),
        "d-1bit.png": (disc(128, 128, 64, 64, 30), "1"),
    }
    truth = {}
    for name, (hole, mode) in shapes.items():
        save_mask(root / name, hole, mode)
        truth[name] = hole
    return root, truth


def write_square_folder(root):
    """Masks of exactly the training size (their crops are one of 8 flips/rotations);
    returns (root, [bool hole maps]) in file order m0, m1, m2."""
    holes = [disc(S, S, 20, 40, 9), disc(S, S, 44, 18, 6) | disc(S, S, 44, 30, 6)]
    ell = np.zeros((S, S), bool)
    ell[8:30, 8:14] = True
    ell[24:30, 8:40] = True
    holes.append(ell)
    for i, (hole, mode) in enumerate(zip(holes, ["L", "RGB", "1"])):
        save_mask(root / f"m{i}.png", hole, mode)
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


# --- crafted image files -------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


def tiny_data_config(batch_size=8, **overrides):
    """The tiny preset, deterministic, with a small shuffle buffer (the data tests' config)."""
    from glcic_tf import config as cfg

    values = {"data.deterministic": True, "data.shuffle_buffer": 8,
              "schedule.batch_size": batch_size}
    values.update(overrides)
    return cfg.get_preset("tiny").override(values)


def assert_same(a, b):
    """Two elements (dicts of arrays) are equal key by key."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def as_numpy(element):
    return {k: v.numpy() for k, v in element.items()}


def holes_from(c, seed=0, n=64, mask_set=None):
    """n holes of `file_holes.holes_dataset` for config c, as one [n, S, S, 1] array."""
    from glcic_tf.data import file_holes

    ds = file_holes.holes_dataset(c.masks, S, seed=seed, mask_set=mask_set).batch(n)
    return next(iter(ds))["mask"].numpy()


def eval_masks(shard, c, **kwargs):
    """{key: (mask, local_offset)} of the evaluation dataset with file masks."""
    from glcic_tf.data import input_pipeline

    out = {}
    for batch in input_pipeline.make_eval_dataset(shard, c, mask_kind="file", **kwargs):
        for key, mask, offset in zip(batch["key"].numpy(), batch["mask"].numpy(),
                                     batch["local_offset"].numpy()):
            out[key] = (mask, offset)
    return out
