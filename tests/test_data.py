"""The tf.data input (glcic_tf.data): per-example ops, make_dataset, make_eval_dataset, corrupt
records and sharding. Shards are written here directly with tf.io.TFRecordWriter."""

import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf import data

NUM_SHARDS, PER_SHARD = 3, 6
# Tiny images of several shapes (portrait, landscape, square), JPEG and PNG, one grayscale.
SHAPES = [(48, 72), (72, 48), (56, 56), (60, 90), (96, 64), (50, 70)]


def config(**overrides):
    values = {"data.deterministic": True, "data.shuffle_buffer": 8, "schedule.batch_size": 4}
    values.update(overrides)
    return cfg.get_preset("tiny").override(values)


def photo(rng, height, width, channels=3):
    """Smooth, photo-like content so that JPEG artefacts stay small."""
    small = rng.uniform(0, 255, (4, 4, channels)).astype(np.float32)
    return tf.cast(tf.image.resize(small, [height, width]), tf.uint8).numpy()


def serialize(encoded: bytes, key: str) -> bytes:
    def feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        data.FEATURE_ENCODED: feature(encoded), data.FEATURE_KEY: feature(key.encode()),
    })).SerializeToString()


def write_shard(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def good_records(rng, shard, count=PER_SHARD):
    records = []
    for i in range(count):
        h, w = SHAPES[i % len(SHAPES)]
        if i == 1:
            encoded = tf.io.encode_png(photo(rng, h, w, channels=1)).numpy()
        elif i % 2:
            encoded = tf.io.encode_png(photo(rng, h, w)).numpy()
        else:
            encoded = tf.io.encode_jpeg(photo(rng, h, w), quality=95).numpy()
        records.append(serialize(encoded, f"shard{shard}/img{i}"))
    return records


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for s in range(NUM_SHARDS):
        write_shard(root / f"train-{s:05d}-of-{NUM_SHARDS:05d}.tfrecord", good_records(rng, s))
    return str(root / "train-*.tfrecord")


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
    """A clean shard, one with a garbage record and an undecodable image, one cut mid-record."""
    root = tmp_path_factory.mktemp("corrupt")
    rng = np.random.default_rng(1)
    good = good_records(rng, 0, count=4)
    write_shard(root / "a-clean.tfrecord", good)
    write_shard(root / "b-garbage.tfrecord",
                [good[0], b"\x00not an example\xff" * 7, serialize(b"not an image", "bad"),
                 good[2]])
    write_shard(root / "c-truncated.tfrecord", good)
    raw = (root / "c-truncated.tfrecord").read_bytes()
    (root / "c-truncated.tfrecord").write_bytes(raw[:len(raw) - 40])  # inside the last record
    return root


def one_example(shards):
    record = next(iter(tf.data.TFRecordDataset(data.list_files(shards)[0])))
    return record


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def as_numpy(element):
    return {k: v.numpy() for k, v in element.items()}


def take(dataset, n):
    return [as_numpy(b) for b in dataset.take(n)]


# --- per-example ops: eagerly and inside Dataset.map -----------------------------------------


def test_decode_example_eager_and_in_map(shards):
    record = one_example(shards)
    eager = as_numpy(data.decode_example(record))
    mapped = as_numpy(tf.data.Dataset.from_tensors(record).map(data.decode_example)
                      .get_single_element())
    assert_same(eager, mapped)
    assert eager["image"].dtype == np.uint8 and eager["image"].shape == (48, 72, 3)
    assert eager["key"] == b"shard0/img0"


def test_decode_grayscale_png_gets_three_channels(shards):
    records = list(tf.data.TFRecordDataset(data.list_files(shards)[0]).take(2))
    image = data.decode_example(records[1])["image"].numpy()
    assert image.shape == (72, 48, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("shape", [(48, 72), (90, 60), (50, 50)])
def test_random_resize_shorter_side_in_range_and_aspect_kept(shape):
    image = tf.zeros(shape + (3,), tf.uint8)
    sides = set()
    for i in range(20):
        out = data.random_resize(image, 64, 96, tf.constant([3, i])).numpy()
        short, long_ = min(out.shape[:2]), max(out.shape[:2])
        assert 64 <= short <= 96
        assert abs(long_ / short - max(shape) / min(shape)) < 0.05
        assert (out.shape[0] >= out.shape[1]) == (shape[0] >= shape[1])
        sides.add(short)
    assert len(sides) > 5


def test_resize_shorter_side_values_stay_in_unit_range():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (30, 40, 3)), tf.uint8)
    out = data.resize_shorter_side(image, 64).numpy()
    assert out.shape == (64, 85, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("flip", [False, True])
def test_random_resize_crop_eager_and_in_map(shards, flip):
    c = config(**{"data.random_flip": flip})
    example = data.decode_example(one_example(shards))
    seed = tf.constant([5, 7], tf.int64)
    eager = as_numpy(data.random_resize_crop(example, c.data, seed))
    mapped = as_numpy(tf.data.Dataset.from_tensors(example)
                      .map(lambda e: data.random_resize_crop(e, c.data, seed))
                      .get_single_element())
    assert_same(eager, mapped)
    assert eager["image"].shape == (64, 64, 3) and eager["image"].dtype == np.float32
    assert eager["key"] == b"shard0/img0"


def test_random_flip_flips_some_crops():
    image = {"image": tf.constant(np.arange(64 * 64 * 3).reshape(64, 64, 3) % 251, tf.uint8),
             "key": tf.constant("k")}
    no_flip, flip = config().data, config(**{"data.random_flip": True}).data
    flipped = 0
    for i in range(12):
        seed = tf.constant([0, i])
        a = data.random_resize_crop(image, no_flip, seed)["image"].numpy()
        b = data.random_resize_crop(image, flip, seed)["image"].numpy()
        if not np.array_equal(a, b):
            np.testing.assert_array_equal(a[:, ::-1], b)
            flipped += 1
    assert 0 < flipped < 12


@pytest.mark.parametrize("op", [data.add_rect_holes, data.add_freeform_holes])
def test_add_holes_eager_and_in_map_and_fill(op):
    c = config()
    image = tf.random.stateless_uniform([64, 64, 3], [0, 1])
    example = {"image": image, "key": tf.constant("k")}
    seed = tf.constant([1, 2], tf.int64)
    eager = as_numpy(op(example, c.masks, c.data.mean_pixel, seed))
    mapped = as_numpy(tf.data.Dataset.from_tensors(example)
                      .map(lambda e: op(e, c.masks, c.data.mean_pixel, seed))
                      .get_single_element())
    assert_same(eager, mapped)
    hole = eager["mask"][..., 0] == 1
    assert hole.any() and not hole.all()
    np.testing.assert_allclose(eager["masked"][hole], np.broadcast_to(
        np.float32(c.data.mean_pixel), (hole.sum(), 3)), atol=1e-6)
    np.testing.assert_array_equal(eager["masked"][~hole], image.numpy()[~hole])
    np.testing.assert_array_equal(eager["image"], image.numpy())


def test_center_crop_is_deterministic_and_central():
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, 16:80] = 255  # the central 64 columns
    out = data.center_crop({"image": tf.constant(image)}, 64)["image"].numpy()
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, 1.0)


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
    files = data.list_files([shards, data.list_files(shards)[0]])
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
    one_file = data.list_files(shards)[0]
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
    files = data.list_files(shards)
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


# --- corrupt records -----------------------------------------------------------------------------


def test_find_corrupt_shards_names_both_bad_shards(corrupt_shards):
    found = dict(data.find_corrupt_shards(str(corrupt_shards / "*.tfrecord")))
    assert sorted(os.path.basename(s) for s in found) == ["b-garbage.tfrecord",
                                                          "c-truncated.tfrecord"]
    garbage = found[str(corrupt_shards / "b-garbage.tfrecord")]
    assert garbage.startswith("2 bad record(s), 4 complete record(s) read")
    assert "record 1 does not parse" in garbage
    assert "truncated" in found[str(corrupt_shards / "c-truncated.tfrecord")]


def test_truncated_record_header_is_found(tmp_path, corrupt_shards):
    raw = (corrupt_shards / "a-clean.tfrecord").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(raw + b"\x05\x00\x00")  # 3 bytes of a header
    [(shard, problem)] = data.find_corrupt_shards(str(tmp_path / "cut.tfrecord"))
    assert "3 trailing bytes" in problem


@pytest.mark.parametrize("name", ["b-garbage", "c-truncated"])
def test_corrupt_record_without_skip_raises_naming_the_shard(corrupt_shards, name):
    pattern = [str(corrupt_shards / "a-clean.tfrecord"), str(corrupt_shards / f"{name}.tfrecord")]
    ds = data.make_dataset(pattern, config(), training=False, batch_size=2)
    with pytest.raises(data.CorruptDataError, match=f"corrupt TFRecord shard.*{name}.tfrecord"):
        for _ in data.checked_iterator(ds, pattern):
            pass


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


def test_checked_iterator_passes_clean_data_through(shards):
    ds = data.make_dataset(shards, config(), training=False, batch_size=6)
    assert len(list(data.checked_iterator(ds, shards))) == 3
