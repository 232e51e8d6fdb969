"""Holes from mask files (glcic_tf.data.file_holes): per-mask crops eagerly and inside
Dataset.map, the never-empty fallback, the mixed hole stream, and file masks through
make_dataset / make_eval_dataset."""

import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import file_holes
from glcic_tf.data import input_pipeline as data
from glcic_tf.data import mask_sets

from helpers.data import (L, S, check_holes, eval_masks, holes_from, is_solid_rectangle,
                          possible, tiny_data_config)


def config(**overrides):
    return tiny_data_config(8, **overrides)


# --- per-mask ops ----------------------------------------------------------------------------


def test_resize_mask_shorter_side_area_threshold():
    hole = np.zeros((8, 16, 1), np.float32)
    hole[0:4, 0:2] = 1  # 2x2 blocks after halving: full, full
    hole[4:6, 4:8] = 1  # half of each 2x2 footprint -> hole (>= 0.5)
    hole[6, 8] = 1      # a quarter -> known
    out = file_holes.resize_mask_shorter_side(tf.constant(hole), 4).numpy()[..., 0]
    expected = np.zeros((4, 8), np.float32)
    expected[0:2, 0] = 1
    expected[2, 2:4] = 1
    np.testing.assert_array_equal(out, expected)


def test_local_offset_for_exact_values():
    mask = np.zeros((S, S, 1), np.float32)
    mask[20:30, 50:61] = 1  # rows [20, 30): start (20 + 30 - 32) // 2 = 9; cols clip to 32
    np.testing.assert_array_equal(file_holes.local_offset_for(tf.constant(mask), L).numpy(),
                                  [9, 32])
    mask[:] = 1  # larger than the patch: centred
    np.testing.assert_array_equal(file_holes.local_offset_for(tf.constant(mask), L).numpy(),
                                  [16, 16])


@pytest.mark.parametrize("random", [True, False])
def test_file_holes_eager_and_in_map(mask_folder, random):
    root, _ = mask_folder
    c = config()
    names = sorted(os.listdir(root))
    encoded = tf.stack([tf.io.read_file(str(root / n)) for n in names])
    seeds = tf.constant([[7, i] for i in range(len(names))], tf.int64)

    def op(e, s):
        return file_holes.file_holes(e, S, c.masks, s, random=random)

    mapped = list(tf.data.Dataset.from_tensor_slices((encoded, seeds)).map(op))
    for i in range(len(names)):
        eager = op(encoded[i], seeds[i])
        for key in eager:
            np.testing.assert_array_equal(eager[key].numpy(), mapped[i][key].numpy())
        check_holes(eager["mask"].numpy(), eager["local_offset"].numpy())


def test_eval_crop_is_the_centre_square(mask_folder):
    root, truth = mask_folder
    out = file_holes.file_holes(tf.io.read_file(str(root / "b-rgb.png")), S, config().masks,
                                tf.constant([0, 0]), random=False)
    np.testing.assert_array_equal(out["mask"].numpy()[..., 0], truth["b-rgb.png"])
    assert bool(out["from_file"])


def test_empty_crops_retry_then_fall_back_to_a_rectangle(tmp_path):
    c = config()
    blank = tf.io.encode_png(np.zeros((40, 40, 1), np.uint8))
    out = file_holes.file_holes(blank, S, c.masks, tf.constant([0, 1]))
    assert not bool(out["from_file"])
    check_holes(out["mask"].numpy(), out["local_offset"].numpy())
    assert is_solid_rectangle(out["mask"].numpy())
    # A small hole at one end of a long strip: most crops miss it.
    strip = np.zeros((32, 320), bool)
    strip[10:20, 2:20] = True
    encoded = tf.io.encode_png(np.where(strip, 255, 0).astype(np.uint8)[..., None])
    sources = []
    for i in range(32):
        out = file_holes.file_holes(encoded, S, c.masks, tf.constant([3, i]))
        mask = out["mask"].numpy()
        check_holes(mask, out["local_offset"].numpy())
        sources.append(bool(out["from_file"]))
        if not sources[-1]:
            assert is_solid_rectangle(mask)
    assert any(sources) and not all(sources)


# --- streams and make_dataset ----------------------------------------------------------------


def test_file_holes_dataset_invariants(mask_folder):
    root, _ = mask_folder
    c = config()
    mask_set = mask_sets.open_mask_set(str(root / "*.png"))
    assert mask_set.format == "image" and len(mask_set.files) == 4
    batch = next(iter(file_holes.file_holes_dataset(mask_set, S, c.masks, seed=1).batch(32)))
    for mask, offset in zip(batch["mask"].numpy(), batch["local_offset"].numpy()):
        check_holes(mask, offset)
    assert batch["from_file"].numpy().mean() > 0.8
    # Flips, rotations and crops: many distinct masks from 4 files.
    assert len({m.tobytes() for m in batch["mask"].numpy()}) > 12


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


# --- evaluation ------------------------------------------------------------------------------


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
