"""Per-example ops (glcic_tf.data.augment): the paper's random resize + crop, the centre crop and
holes, each eagerly and inside Dataset.map."""

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import augment, schema

from helpers.data import tiny_data_config, as_numpy, assert_same, good_records


def config(**overrides):
    return tiny_data_config(4, **overrides)


@pytest.mark.parametrize("shape", [(48, 72), (90, 60), (50, 50)])
def test_random_resize_shorter_side_in_range_and_aspect_kept(shape):
    image = tf.zeros(shape + (3,), tf.uint8)
    sides = set()
    for i in range(20):
        out = augment.random_resize(image, 64, 96, tf.constant([3, i])).numpy()
        short, long_ = min(out.shape[:2]), max(out.shape[:2])
        assert 64 <= short <= 96
        assert abs(long_ / short - max(shape) / min(shape)) < 0.05
        assert (out.shape[0] >= out.shape[1]) == (shape[0] >= shape[1])
        sides.add(short)
    assert len(sides) > 5


def test_resize_shorter_side_values_stay_in_unit_range():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (30, 40, 3)), tf.uint8)
    out = augment.resize_shorter_side(image, 64).numpy()
    assert out.shape == (64, 85, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("flip", [False, True])
def test_random_resize_crop_eager_and_in_map(flip):
    c = config(**{"data.random_flip": flip})
    record = good_records(np.random.default_rng(0), 0, count=1)[0]  # 48x72, key shard0/img0
    example = schema.decode_example(tf.constant(record))
    seed = tf.constant([5, 7], tf.int64)
    eager = as_numpy(augment.random_resize_crop(example, c.data, seed))
    mapped = as_numpy(tf.data.Dataset.from_tensors(example)
                      .map(lambda e: augment.random_resize_crop(e, c.data, seed))
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
        a = augment.random_resize_crop(image, no_flip, seed)["image"].numpy()
        b = augment.random_resize_crop(image, flip, seed)["image"].numpy()
        if not np.array_equal(a, b):
            np.testing.assert_array_equal(a[:, ::-1], b)
            flipped += 1
    assert 0 < flipped < 12


@pytest.mark.parametrize("op", [augment.add_rect_holes, augment.add_freeform_holes])
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
    out = augment.center_crop({"image": tf.constant(image)}, 64)["image"].numpy()
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, 1.0)
