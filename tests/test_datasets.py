"""glcic_tf.datasets: one metadata file per prefix, what --data names, shard checks, migration.

Datasets are written directly (tests/dataset_files.py, no Beam), a few records each.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dataset_files import example_bytes, read_keys, write_dataset
from glcic_tf import config as cfg
from glcic_tf import data, datasets


def tiny(**overrides):
    values = {"data.deterministic": True, "data.shuffle_buffer": 4, "schedule.batch_size": 1,
              "data.image_size": 32, "data.resize_min": 32, "data.resize_max": 36,
              "masks.local_size": 16, "masks.hole_min": 6, "masks.hole_max": 12}
    values.update(overrides)
    return cfg.get_preset("tiny").override(values)


@pytest.fixture()
def folder(tmp_path):
    """Two datasets in one folder, with different constant colours (so different means)."""
    d = tmp_path / "shards"
    urban = write_dataset(str(d / "urban"), train=4, val=2, shards=(2, 1), colour=(200, 10, 10))
    bsd = write_dataset(str(d / "bsd"), train=3, val=1, shards=(1, 1), colour=(10, 10, 200))
    return {"dir": d, "urban": urban, "bsd": bsd}


def test_names():
    assert datasets.info_path("gs://b/tfr/ds") == "gs://b/tfr/ds-dataset_info.json"
    assert datasets.shard_name_parts("gs://b/tfr/ds-val-00003-of-00010.tfrecord") == (
        "gs://b/tfr/ds", "val")
    assert datasets.shard_name_parts("ds-train-train-00000-of-00001.tfrecord") == (
        "ds-train", "train")
    assert datasets.shard_name_parts("/x/ds-rejects.jsonl") is None
    assert datasets.join("gs://b/tfr", "a.tfrecord") == "gs://b/tfr/a.tfrecord"
    assert datasets.join("gs://b/tfr", "gs://c/a.tfrecord") == "gs://c/a.tfrecord"
    assert datasets.join("", "a.tfrecord") == "a.tfrecord"


def test_two_datasets_in_one_folder_each_find_their_own_metadata(folder):
    d = folder["dir"]
    for name in ("urban", "bsd"):
        expected = tuple(folder[name]["mean_pixel"])
        for spec in (str(d / name), str(d / f"{name}-dataset_info.json"),
                     str(d / f"{name}-train-*")):
            selection = datasets.select(spec, "train")
            assert selection.mean_pixel == pytest.approx(expected), spec
            assert [ds.info_path for ds in selection.datasets] == [
                str(d / f"{name}-dataset_info.json")]
            assert not selection.unowned
            assert all(os.path.basename(f).startswith(f"{name}-train-") for f in selection.files)
    assert folder["urban"]["mean_pixel"][0] > 0.7 and folder["bsd"]["mean_pixel"][2] > 0.7


def test_a_prefix_gives_its_splits_in_full(folder):
    prefix = str(folder["dir"] / "urban")
    train = datasets.select(prefix, "train")
    val = train.val_selection()
    assert len(train.files) == 2 and len(val.files) == 1
    assert sorted(read_keys(train.files)) == sorted(b"urban/train/%d" % i for i in range(4))
    assert read_keys(val.files) == [b"urban/val/0", b"urban/val/1"]
    assert len(datasets.select(prefix, "all").files) == 3


def test_folder_with_several_datasets_is_ambiguous(folder):
    with pytest.raises(datasets.DatasetError, match=r"holds 2 datasets \(bsd, urban\)"):
        datasets.select(str(folder["dir"]), "train")


def test_folder_with_one_dataset_is_that_dataset(tmp_path):
    write_dataset(str(tmp_path / "only" / "ds"), train=2, val=1, shards=(1, 1))
    assert len(datasets.select(str(tmp_path / "only"), "train").files) == 1


def test_several_datasets_mean_is_weighted_by_pixels(folder):
    d = folder["dir"]
    selection = datasets.select(f"{d / 'urban'},{d / 'bsd'}", "train")
    assert len(selection.datasets) == 2
    urban, bsd = np.array(folder["urban"]["mean_pixel"]), np.array(folder["bsd"]["mean_pixel"])
    expected = (urban * 4 + bsd * 3) / 7  # same image size: pixels in proportion to images
    np.testing.assert_allclose(selection.mean_pixel, expected)


def test_paths_in_metadata_are_relative_to_the_metadata_file(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the dataset's folder
    moved = tmp_path / "elsewhere"
    os.rename(folder["dir"], moved)
    selection = datasets.select(os.path.relpath(moved / "urban"), "val")
    assert [os.path.basename(f) for f in selection.files] == ["urban-val-00000-of-00001.tfrecord"]
    assert all(os.path.exists(f) for f in selection.files)
    monkeypatch.chdir(moved.parent.parent)
    assert len(datasets.select(str(moved / "urban"), "train").files) == 2


def test_paths_resolve_on_a_url_file_system():
    """gs:// is not reachable here; TensorFlow's ram:// file system takes the same code path."""
    root = "ram://bucket/tfr"
    tf.io.gfile.makedirs(root)
    files = []
    for s in range(2):
        path = f"{root}/ds-train-{s:05d}-of-00002.tfrecord"
        with tf.io.TFRecordWriter(path) as w:
            w.write(example_bytes(f"k{s}", np.zeros((8, 8, 3), np.uint8)))
        files.append(path)
    info = {"name": "ds", "counts": {"train": 2, "val": 0}, "mean_pixel": [0.1, 0.2, 0.3],
            "shard_files": {"train": [os.path.basename(f) for f in files], "val": []}}
    with tf.io.gfile.GFile(f"{root}/ds-dataset_info.json", "w") as f:
        f.write(json.dumps(info))
    selection = datasets.select(f"{root}/ds", "train")
    assert list(selection.files) == files
    assert selection.mean_pixel == (0.1, 0.2, 0.3)
    assert datasets.select(f"{root}/ds-train-*", "train").mean_pixel == (0.1, 0.2, 0.3)
    assert selection.val_selection() is None  # no val images
    for path in tf.io.gfile.glob(root + "/*"):
        tf.io.gfile.remove(path)


def test_a_missing_listed_shard_is_named(folder):
    os.remove(folder["dir"] / "urban-train-00001-of-00002.tfrecord")
    with pytest.raises(FileNotFoundError, match="urban-train-00001-of-00002.tfrecord, which "
                                                "does not exist"):
        datasets.select(str(folder["dir"] / "urban"), "train")


def test_stray_json_caught_by_a_glob_is_named(folder):
    (folder["dir"] / "urban-rejects.jsonl").write_text('{"path": "x", "reason": "empty"}\n')
    with pytest.raises(data.InvalidShardError) as raised:
        datasets.select(str(folder["dir"] / "urban*"), "train")
    message = str(raised.value)
    assert "urban-dataset_info.json: no TFRecord framing: it looks like JSON" in message
    assert "urban-rejects.jsonl" in message and "expected TFRecord files" in message
    assert "--data DIR/NAME" in message
    # The same through the input pipelines and the shard scanner.
    pattern = str(folder["dir"] / "urban*")
    with pytest.raises(data.InvalidShardError, match="urban-dataset_info.json"):
        data.make_dataset(pattern, tiny())
    with pytest.raises(data.InvalidShardError, match="urban-dataset_info.json"):
        data.make_eval_dataset(pattern, tiny())
    found = dict(data.find_corrupt_shards(pattern))
    assert "not a TFRecord shard" in found[str(folder["dir"] / "urban-dataset_info.json")]


@pytest.mark.parametrize("content,problem", [
    (b"hello, plain text\n", "no TFRecord framing: it looks like text"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "it looks like an image file"),
    (b"abc", "too short for a TFRecord record header"),
])
def test_check_shard_file_says_what_the_file_is(tmp_path, content, problem):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(content)
    assert problem in data.check_shard_file(str(path))


def test_check_shard_file_tfrecords_of_another_schema_and_empty_files(tmp_path):
    other = tmp_path / "stats.tfrecord"
    with tf.io.TFRecordWriter(str(other)) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature={
            "mask/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))
        })).SerializeToString())
    assert "without image/encoded bytes (features: mask/encoded)" in data.check_shard_file(
        str(other))
    garbage = tmp_path / "garbage.tfrecord"
    with tf.io.TFRecordWriter(str(garbage)) as w:
        w.write(b"\xff\xff not a protobuf")
    assert "not a tf.train.Example" in data.check_shard_file(str(garbage))
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert data.check_shard_file(str(empty)) is None  # a TFRecord of no record
    assert data.check_shard_file(str(tmp_path)) == "it is a folder"


def test_legacy_layout_keeps_loading_and_names_its_owner(tmp_path):
    """Old layout: three datasets in one folder, one dataset_info.json (the last one's)."""
    d = tmp_path / "old"
    urban = write_dataset(str(d / "urban"), colour=(200, 10, 10), info_name="unused.json")
    write_dataset(str(d / "sun"), colour=(10, 200, 10), info_name="dataset_info.json")
    os.remove(d / "unused.json")
    sun = datasets.select(str(d / "sun-train-*"), "train")
    assert sun.datasets[0].legacy and sun.mean_pixel[1] > 0.7
    assert len(datasets.select(str(d / "sun"), "train").files) == 2  # the prefix works too
    lost = datasets.select(str(d / "urban-train-*"), "train")
    assert lost.mean_pixel is None and len(lost.unowned) == 2  # never the other one's mean

    actions = datasets.migrate(str(d), recompute=True)
    assert any("dataset_info.json -> " in a for a in actions)
    assert not (d / "dataset_info.json").exists()
    assert json.loads((d / "sun-dataset_info.json").read_text())["name"] == "sun"
    rebuilt = datasets.select(str(d / "urban"), "train")
    np.testing.assert_allclose(rebuilt.mean_pixel, urban["mean_pixel"], rtol=1e-12)
    info = rebuilt.datasets[0].info
    assert info["counts"] == {"train": 4, "val": 2} and info["recomputed_from_shards"]
    assert datasets.migrate(str(d)) == []  # nothing left to do


def test_legacy_metadata_without_a_name_belongs_to_its_folder(tmp_path):
    write_dataset(str(tmp_path / "train"), info_name="dataset_info.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mean_pixel": [0.25, 0.5, 0.75]}))
    selection = datasets.select(str(tmp_path / "*.tfrecord"), "train")
    assert selection.mean_pixel == (0.25, 0.5, 0.75)


def test_existing_prefix_refused_and_overwrite_removes_only_its_files(folder):
    d = folder["dir"]
    write_dataset(str(d / "urbanplus"), train=1, val=1, shards=(1, 1))
    with pytest.raises(datasets.DatasetExistsError, match="dataset .*urban already exists"):
        datasets.prepare_output(str(d / "urban"), overwrite=False)
    assert datasets.prepare_output(str(d / "new"), overwrite=False) == []
    removed = datasets.prepare_output(str(d / "urban"), overwrite=True)
    assert len(removed) == 4  # 2 + 1 shards and the metadata
    left = sorted(os.listdir(d))
    assert not [f for f in left if f.startswith("urban-")]
    assert "bsd-dataset_info.json" in left and "urbanplus-dataset_info.json" in left


def test_old_layout_folder_with_several_prefixes_is_ambiguous(tmp_path):
    write_dataset(str(tmp_path / "urban"), info_name="unused.json")
    write_dataset(str(tmp_path / "sun"), info_name="dataset_info.json")
    with pytest.raises(datasets.DatasetError, match="migrate: python pipelines/migrate_data"):
        datasets.select(str(tmp_path), "train")


def test_migrate_cli_dry_run_then_migrate(tmp_path, capsys):
    from pipeline_scripts import load_pipeline

    write_dataset(str(tmp_path / "urban"), info_name="unused.json")
    write_dataset(str(tmp_path / "sun"), info_name="dataset_info.json")
    cli = load_pipeline("migrate_datasets")
    assert cli.main(cli.parse_args([str(tmp_path), "--dry-run"])) == 0
    out = capsys.readouterr().out
    assert "would: " in out and "urban: shards without metadata" in out
    assert (tmp_path / "dataset_info.json").exists()
    assert cli.main(cli.parse_args([str(tmp_path), "--recompute"])) == 0
    assert sorted(p.name for p in tmp_path.glob("*-dataset_info.json")) == [
        "sun-dataset_info.json", "urban-dataset_info.json"]
    assert cli.main(cli.parse_args([str(tmp_path / "nope")])) == 2
    assert capsys.readouterr().err.startswith("error: ")
