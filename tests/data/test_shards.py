"""Shard files (glcic_tf.data.shards): what a file that is no shard is said to be, and corrupt
records found, named or passed through. Malformed records are written by hand."""

import os

import pytest
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf.data import input_pipeline as data
from glcic_tf.data import selections
from glcic_tf.data import shards as shards_lib

from helpers.data import tiny_data_config, write_corrupt_shards, write_photo_shards, write_records
from helpers.datasets import write_two_datasets


def config(**overrides):
    return tiny_data_config(4, **overrides)


def tiny(**overrides):
    values = {"data.deterministic": True, "data.shuffle_buffer": 4, "schedule.batch_size": 1,
              "data.image_size": 32, "data.resize_min": 32, "data.resize_max": 36,
              "masks.local_size": 16, "masks.hole_min": 6, "masks.hole_max": 12}
    values.update(overrides)
    return cfg.get_preset("tiny").override(values)


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
    """A clean shard, one with a garbage record and an undecodable image, one cut mid-record."""
    return write_corrupt_shards(tmp_path_factory.mktemp("corrupt"))


# --- files that are not shards -------------------------------------------------------------------


def test_stray_json_caught_by_a_glob_is_named(tmp_path):
    folder = write_two_datasets(tmp_path / "shards")
    (folder["dir"] / "urban-rejects.jsonl").write_text('{"path": "x", "reason": "empty"}\n')
    with pytest.raises(shards_lib.InvalidShardError) as raised:
        selections.select(str(folder["dir"] / "urban*"), "train")
    message = str(raised.value)
    assert "urban-dataset_info.json: no TFRecord framing: it looks like JSON" in message
    assert "urban-rejects.jsonl" in message and "expected TFRecord files" in message
    assert "--data DIR/NAME" in message
    # The same through the input pipelines and the shard scanner.
    pattern = str(folder["dir"] / "urban*")
    with pytest.raises(shards_lib.InvalidShardError, match="urban-dataset_info.json"):
        data.make_dataset(pattern, tiny())
    with pytest.raises(shards_lib.InvalidShardError, match="urban-dataset_info.json"):
        data.make_eval_dataset(pattern, tiny())
    found = dict(shards_lib.find_corrupt_shards(pattern))
    assert "not a TFRecord shard" in found[str(folder["dir"] / "urban-dataset_info.json")]


@pytest.mark.parametrize("content,problem", [
    (b"hello, plain text\n", "no TFRecord framing: it looks like text"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "it looks like an image file"),
    (b"abc", "too short for a TFRecord record header"),
])
def test_check_shard_file_says_what_the_file_is(tmp_path, content, problem):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(content)
    assert problem in shards_lib.check_shard_file(str(path))


def test_check_shard_file_tfrecords_of_another_schema_and_empty_files(tmp_path):
    other = tmp_path / "stats.tfrecord"
    write_records(other, [tf.train.Example(features=tf.train.Features(feature={
        "mask/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))
    })).SerializeToString()])
    assert "without image/encoded bytes (features: mask/encoded)" in shards_lib.check_shard_file(
        str(other))
    garbage = tmp_path / "garbage.tfrecord"
    write_records(garbage, [b"\xff\xff not a protobuf"])
    assert "not a tf.train.Example" in shards_lib.check_shard_file(str(garbage))
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert shards_lib.check_shard_file(str(empty)) is None  # a TFRecord of no record
    assert shards_lib.check_shard_file(str(tmp_path)) == "it is a folder"


# --- corrupt records -----------------------------------------------------------------------------


def test_find_corrupt_shards_names_both_bad_shards(corrupt_shards):
    found = dict(shards_lib.find_corrupt_shards(str(corrupt_shards / "*.tfrecord")))
    assert sorted(os.path.basename(s) for s in found) == ["b-garbage.tfrecord",
                                                          "c-truncated.tfrecord"]
    garbage = found[str(corrupt_shards / "b-garbage.tfrecord")]
    assert garbage.startswith("2 bad record(s), 4 complete record(s) read")
    assert "record 1 does not parse" in garbage
    assert "truncated" in found[str(corrupt_shards / "c-truncated.tfrecord")]


def test_truncated_record_header_is_found(tmp_path, corrupt_shards):
    raw = (corrupt_shards / "a-clean.tfrecord").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(raw + b"\x05\x00\x00")  # 3 bytes of a header
    [(shard, problem)] = shards_lib.find_corrupt_shards(str(tmp_path / "cut.tfrecord"))
    assert "3 trailing bytes" in problem


@pytest.mark.parametrize("name", ["b-garbage", "c-truncated"])
def test_corrupt_record_without_skip_raises_naming_the_shard(corrupt_shards, name):
    pattern = [str(corrupt_shards / "a-clean.tfrecord"), str(corrupt_shards / f"{name}.tfrecord")]
    ds = data.make_dataset(pattern, config(), training=False, batch_size=2)
    with pytest.raises(shards_lib.CorruptDataError,
                       match=f"corrupt TFRecord shard.*{name}.tfrecord"):
        for _ in shards_lib.checked_iterator(ds, pattern):
            pass


def test_checked_iterator_passes_clean_data_through(tmp_path):
    shards = write_photo_shards(tmp_path, 3, 6)
    ds = data.make_dataset(shards, config(), training=False, batch_size=6)
    assert len(list(shards_lib.checked_iterator(ds, shards))) == 3
