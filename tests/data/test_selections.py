"""glcic_tf.data.selections: what --data names (prefixes, metadata files, globs, several of
them, URLs) resolved to shard files, their datasets and the mean pixel.

Datasets are written directly (tests/helpers/datasets.py, no Beam), a few records each.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.data import selections

from helpers.datasets import read_keys, write_two_datasets
from helpers.images import write_shard


@pytest.fixture()
def folder(tmp_path):
    """Two datasets in one folder, with different constant colours (so different means)."""
    return write_two_datasets(tmp_path / "shards")


def test_two_datasets_in_one_folder_each_find_their_own_metadata(folder):
    d = folder["dir"]
    for name in ("urban", "bsd"):
        expected = tuple(folder[name]["mean_pixel"])
        for spec in (str(d / name), str(d / f"{name}-dataset_info.json"),
                     str(d / f"{name}-train-*")):
            selection = selections.select(spec, "train")
            assert selection.mean_pixel == pytest.approx(expected), spec
            assert [ds.info_path for ds in selection.datasets] == [
                str(d / f"{name}-dataset_info.json")]
            assert not selection.unowned
            assert all(os.path.basename(f).startswith(f"{name}-train-") for f in selection.files)
    assert folder["urban"]["mean_pixel"][0] > 0.7 and folder["bsd"]["mean_pixel"][2] > 0.7


def test_a_prefix_gives_its_splits_in_full(folder):
    prefix = str(folder["dir"] / "urban")
    train = selections.select(prefix, "train")
    val = train.val_selection()
    assert len(train.files) == 2 and len(val.files) == 1
    assert sorted(read_keys(train.files)) == sorted(b"urban/train/%d" % i for i in range(4))
    assert read_keys(val.files) == [b"urban/val/0", b"urban/val/1"]
    assert len(selections.select(prefix, "all").files) == 3


def test_several_datasets_mean_is_weighted_by_pixels(folder):
    d = folder["dir"]
    selection = selections.select(f"{d / 'urban'},{d / 'bsd'}", "train")
    assert len(selection.datasets) == 2
    urban, bsd = np.array(folder["urban"]["mean_pixel"]), np.array(folder["bsd"]["mean_pixel"])
    expected = (urban * 4 + bsd * 3) / 7  # same image size: pixels in proportion to images
    np.testing.assert_allclose(selection.mean_pixel, expected)


def test_paths_resolve_on_a_url_file_system():
    """gs:// is not reachable here; TensorFlow's ram:// file system takes the same code path."""
    root = "ram://bucket/tfr"
    tf.io.gfile.makedirs(root)
    files = []
    for s in range(2):
        path = f"{root}/ds-train-{s:05d}-of-00002.tfrecord"
        files.append(write_shard(path, [np.zeros((8, 8, 3), np.uint8)], keys=[f"k{s}"]))
    info = {"name": "ds", "counts": {"train": 2, "val": 0}, "mean_pixel": [0.1, 0.2, 0.3],
            "shard_files": {"train": [os.path.basename(f) for f in files], "val": []}}
    with tf.io.gfile.GFile(f"{root}/ds-dataset_info.json", "w") as f:
        f.write(json.dumps(info))
    selection = selections.select(f"{root}/ds", "train")
    assert list(selection.files) == files
    assert selection.mean_pixel == (0.1, 0.2, 0.3)
    assert selections.select(f"{root}/ds-train-*", "train").mean_pixel == (0.1, 0.2, 0.3)
    assert selection.val_selection() is None  # no val images
    for path in tf.io.gfile.glob(root + "/*"):
        tf.io.gfile.remove(path)
