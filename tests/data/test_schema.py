"""The tf.train.Example schema (glcic_tf.data.schema): parsing and decoding, eagerly and inside
Dataset.map."""

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import schema

from helpers.data import good_records


@pytest.fixture(scope="module")
def records():
    """The first records of a photo shard: a 48x72 JPEG keyed shard0/img0, then a grayscale
    72x48 PNG."""
    return good_records(np.random.default_rng(0), 0, count=2)


def as_numpy(element):
    return {k: v.numpy() for k, v in element.items()}


def test_decode_example_eager_and_in_map(records):
    record = tf.constant(records[0])
    eager = as_numpy(schema.decode_example(record))
    mapped = as_numpy(tf.data.Dataset.from_tensors(record).map(schema.decode_example)
                      .get_single_element())
    assert eager.keys() == mapped.keys()
    for k in eager:
        np.testing.assert_array_equal(eager[k], mapped[k], err_msg=k)
    assert eager["image"].dtype == np.uint8 and eager["image"].shape == (48, 72, 3)
    assert eager["key"] == b"shard0/img0"


def test_decode_grayscale_png_gets_three_channels(records):
    image = schema.decode_example(tf.constant(records[1]))["image"].numpy()
    assert image.shape == (72, 48, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
