"""The tf.data input pipelines (glcic_tf.data.input_pipeline): make_dataset, make_eval_dataset,
sharding and skipping corrupt records. Shards are written with tests/helpers/data.py."""

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import input_pipeline as data
from glcic_tf.data import shards as shards_lib

from helpers.data import (as_numpy, assert_same, tiny_data_config, write_corrupt_shards,
                          write_photo_shards)

NUM_SHARDS, PER_SHARD = 3, 6


def config(**overrides):
    return tiny_data_config(4, **overrides)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_photo_shards(tmp_path_factory.mktemp("shards"), NUM_SHARDS, PER_SHARD)


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
    """A clean shard, one with a garbage record and an undecodable image, one cut mid-record."""
    return write_corrupt_shards(tmp_path_factory.mktemp("corrupt"))


def take(dataset, n):
    return [as_numpy(b) for b in dataset.take(n)]


# --- make_dataset --------------------------------------------------------------------------------


def check_batch_invariants(batch, c):
    size, local = c.data.image_size, c.masks.local_size
    b = c.schedule.batch_size
    assert batch["image"].shape == (b, size, size, 3) and batch["image"].dtype == np.float32
    assert batch["mask"].shape == (b, size, size, 1) and batch["mask"].dtype == np.float32
    assert batch["masked"].shape == (b, size, size, 3)
    assert batch["local_offset"].shape == (b, 2) and batch["local_offset"].dtype == np.int32
    assert batch["key"].shape == (b,)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    for image, mask, masked, offset in zip(batch["image"], batch["mask"], batch["masked"],
                                           batch["local_offset"]):
        hole = mask[..., 0] == 1
        assert hole.any()
        assert (0 <= offset).all() and (offset + local <= size).all()
        y, x = offset
        assert hole[y:y + local, x:x + local].sum() == hole.sum()  # hole inside the patch
        np.testing.assert_allclose(masked[hole], np.broadcast_to(
            np.float32(c.data.mean_pixel), (hole.sum(), 3)), atol=1e-6)
        np.testing.assert_array_equal(masked[~hole], image[~hole])


def test_make_dataset_rect_invariants(shards):
    c = config()
    ds = data.make_dataset(shards, c)
    assert set(ds.element_spec) == set(data.ELEMENT_KEYS)
    assert ds.element_spec["image"].shape == (4, 64, 64, 3)
    batches = take(ds, 10)  # 40 examples > 18 records: repeats forever
    for batch in batches:
        check_batch_invariants(batch, c)
        for mask in batch["mask"]:
            ys, xs = np.nonzero(mask[..., 0])
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            assert c.masks.hole_min <= h <= c.masks.hole_max
            assert c.masks.hole_min <= w <= c.masks.hole_max
            assert mask.sum() == h * w
    keys = np.concatenate([b["key"] for b in batches])
    assert len(set(keys)) == NUM_SHARDS * PER_SHARD


def test_make_dataset_freeform_invariants(shards):
    c = config(**{"masks.kind": "freeform"})
    for batch in take(data.make_dataset(shards, c), 2):
        check_batch_invariants(batch, c)


def test_deterministic_stream_is_reproducible(shards):
    c = config(**{"masks.kind": "mixed"})
    first = take(data.make_dataset(shards, c), 6)
    second = take(data.make_dataset(shards, c), 6)
    for a, b in zip(first, second):
        assert_same(a, b)
    other = take(data.make_dataset(shards, c, seed=123), 6)
    assert not all(np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_one_pass_when_not_training(shards):
    c = config(**{"data.deterministic": False})
    batches = take(data.make_dataset(shards, c, training=False, batch_size=5), 100)
    assert len(batches) == (NUM_SHARDS * PER_SHARD) // 5  # drop_remainder
    keys = [k for b in batches for k in b["key"]]
    assert len(set(keys)) == len(keys)
    again = take(data.make_dataset(shards, c, training=False, batch_size=5), 100)
    for a, b in zip(batches, again):
        assert_same(a, b)


def test_list_of_patterns_and_missing_pattern(shards, tmp_path):
    files = shards_lib.list_files([shards, shards_lib.list_files(shards)[0]])
    assert len(files) == NUM_SHARDS
    missing = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="no TFRecord file matches .*nothing-"):
        data.make_dataset(missing, config())
    with pytest.raises(FileNotFoundError, match="nothing-"):
        data.make_eval_dataset([shards, missing], config())


def test_input_context_per_replica_batch_and_file_shards(shards):
    c = config(**{"schedule.batch_size": 6})
    keys = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        ds = data.make_dataset(shards, c, input_context=context, training=False)
        assert ds.element_spec["image"].shape[0] == 3
        keys.append({k.decode().split("/")[0] for b in take(ds, 100) for k in b["key"]})
    # 3 shards over 2 pipelines: by file, shards 0 and 2 to pipeline 0, shard 1 to pipeline 1.
    assert keys == [{"shard0", "shard2"}, {"shard1"}]


def test_input_context_fewer_files_than_pipelines_shards_by_record(shards):
    one_file = shards_lib.list_files(shards)[0]
    keys = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        ds = data.make_dataset(one_file, config(), input_context=context, training=False,
                               batch_size=2)
        keys.append([k for b in take(ds, 100) for k in b["key"]])
    assert len(keys[0]) == len(keys[1]) == PER_SHARD // 2
    assert not set(keys[0]) & set(keys[1])


def test_auto_shard_policy():
    assert data.auto_shard_policy(8, 2) == tf.data.experimental.AutoShardPolicy.FILE
    assert data.auto_shard_policy(2, 2) == tf.data.experimental.AutoShardPolicy.FILE
    assert data.auto_shard_policy(1, 2) == tf.data.experimental.AutoShardPolicy.DATA


def test_distribute_datasets_from_function_per_replica_batches(shards):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPU devices"
    strategy = tf.distribute.MirroredStrategy(devices)
    c = config(**{"schedule.batch_size": 4})
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: data.make_dataset(shards, c, input_context=ctx))
    batch = next(iter(dist))
    shapes = [v.shape for v in strategy.experimental_local_results(batch["image"])]
    assert shapes == [(2, 64, 64, 3), (2, 64, 64, 3)]


# --- make_eval_dataset ---------------------------------------------------------------------------


def eval_masks(pattern, c, **kwargs):
    out = {}
    for batch in data.make_eval_dataset(pattern, c, **kwargs):
        for key, mask, offset in zip(batch["key"].numpy(), batch["mask"].numpy(),
                                     batch["local_offset"].numpy()):
            out[key] = (mask, offset)
    return out


def test_eval_dataset_shapes_and_one_pass(shards):
    c = config()
    batches = take(data.make_eval_dataset(shards, c, batch_size=4), 100)
    assert [len(b["key"]) for b in batches] == [4, 4, 4, 4, 2]  # no drop_remainder
    check_batch_invariants(batches[0], c)  # c's batch size is 4
    again = take(data.make_eval_dataset(shards, c, batch_size=4), 100)
    for a, b in zip(batches, again):
        assert_same(a, b)


@pytest.mark.parametrize("kind", ["rect", "freeform"])
def test_eval_masks_depend_on_key_and_seed_only(shards, kind):
    c = config()
    files = shards_lib.list_files(shards)
    base = eval_masks(shards, c, mask_kind=kind, seed=3, batch_size=4)
    # Another file order and batch size: each key keeps its holes.
    reordered = eval_masks(files[::-1][:2], c, mask_kind=kind, seed=3, batch_size=1)
    assert len(reordered) == 2 * PER_SHARD
    for key, (mask, offset) in reordered.items():
        np.testing.assert_array_equal(mask, base[key][0])
        np.testing.assert_array_equal(offset, base[key][1])
    other_seed = eval_masks(shards, c, mask_kind=kind, seed=4, batch_size=4)
    assert sum(not np.array_equal(other_seed[k][0], base[k][0]) for k in base) > len(base) // 2
    # Different keys get different holes.
    assert len({base[k][0].tobytes() for k in base}) > len(base) // 2


def test_eval_dataset_rejects_unknown_mask_kind(shards):
    with pytest.raises(ValueError, match="mask_kind must be 'rect' or 'freeform', got 'mixed'"):
        data.make_eval_dataset(shards, config(), mask_kind="mixed")


# --- corrupt records ---------------------------------------------------------------------------


def test_corrupt_records_skipped_with_skip_corrupt(corrupt_shards):
    pattern = str(corrupt_shards / "*.tfrecord")
    c = config(**{"data.skip_corrupt": True})
    keys = [k for b in data.make_dataset(pattern, c, training=False, batch_size=1)
            for k in b["key"].numpy()]
    # 4 clean + 2 good in the garbage shard + 3 before the cut.
    assert len(keys) == 9
    assert b"bad" not in keys
    eval_keys = [k for b in data.make_eval_dataset(pattern, c) for k in b["key"].numpy()]
    assert sorted(eval_keys) == sorted(keys)
    # Training (repeat forever) keeps going past the bad records.
    for batch in take(data.make_dataset(pattern, c), 6):
        check_batch_invariants(batch, c)
