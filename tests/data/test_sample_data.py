"""glcic_tf.data.sample_data: the bundled dataset built from scikit-image's shipped photos."""

import os
import socket

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import datasets
from glcic_tf.data import normalize
from glcic_tf.data import sample_data
from glcic_tf.data import schema
from glcic_tf.data import tfrecords


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    """Builds the sample dataset once, with every network connection refused."""
    def no_network(*args, **kwargs):
        raise AssertionError(f"sample data tried to use the network: {args}")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    try:
        yield sample_data.ensure_sample_dataset(str(tmp_path_factory.mktemp("cache") / "v1"))
    finally:
        mp.undo()


def test_sources_are_files_shipped_in_the_wheel():
    files = sample_data.sample_source_files()
    root = sample_data.skimage_data_dir()
    assert len(files) >= 12
    assert all(os.path.dirname(f) == root for f in files)
    names = {os.path.basename(f) for f in files}
    assert {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "logo.png",
            "camera.png"} <= names


def test_builds_train_and_val_shards(sample_dir):
    info = datasets.read_dataset_info(sample_dir)
    n = len(sample_data.sample_source_files())
    assert info["counts"]["val"] >= 2
    assert info["counts"]["train"] + info["counts"]["val"] == n
    assert info["num_rejects"] == 0
    assert all(0.0 < v < 1.0 for v in info["mean_pixel"])
    assert os.listdir(sample_dir).count("sample-dataset_info.json") == 1
    assert datasets.LEGACY_INFO_NAME not in os.listdir(sample_dir)
    assert not [d for d in os.listdir(os.path.dirname(sample_dir)) if ".tmp-" in d]
    for pattern, split in ((sample_data.sample_train_pattern(sample_dir), "train"),
                           (sample_data.sample_val_pattern(sample_dir), "val")):
        files = tf.io.gfile.glob(pattern)
        assert files
        records = list(tf.data.TFRecordDataset(files))
        assert len(records) == info["counts"][split]
        ex = tf.train.Example.FromString(records[0].numpy())
        feature = ex.features.feature
        image = tf.io.decode_image(feature[schema.FEATURE_ENCODED].bytes_list.value[0]).numpy()
        assert image.shape == (feature[schema.FEATURE_HEIGHT].int64_list.value[0],
                               feature[schema.FEATURE_WIDTH].int64_list.value[0], 3)
        assert min(image.shape[:2]) >= 128


def test_split_is_the_hash_of_the_name_relative_to_the_skimage_dir(sample_dir):
    info = datasets.read_dataset_info(sample_dir)
    root = sample_data.skimage_data_dir()
    keys = [normalize.image_key(f, root) for f in sample_data.sample_source_files()]
    expected_val = sum(tfrecords.split_of(k, info["val_fraction"]) == "val" for k in keys)
    assert expected_val == info["counts"]["val"]
    assert info["val_fraction"] == sample_data.sample_val_fraction(keys)


def test_second_call_reuses_the_cache(sample_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cached sample dataset was rebuilt")

    monkeypatch.setattr(tfrecords, "run", fail)
    assert sample_data.ensure_sample_dataset(sample_dir) == sample_dir
    monkeypatch.setenv("GLCIC_CACHE_DIR", sample_dir)
    assert sample_data.ensure_sample_dataset() == sample_dir


def test_val_fraction_gives_exactly_n_val_images():
    keys = [normalize.image_key(f"/x/{i}.png") for i in range(40)]
    fraction = sample_data.sample_val_fraction(keys)
    assert sum(tfrecords.split_of(k, fraction) == "val" for k in keys) == 4  # 10% of 40
    keys = keys[:7]
    fraction = sample_data.sample_val_fraction(keys)
    assert sum(tfrecords.split_of(k, fraction) == "val" for k in keys) == 2
    assert np.isfinite(fraction)
