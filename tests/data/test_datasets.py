"""glcic_tf.data.datasets: one metadata file per prefix, how a name finds its dataset (through
`selections.select`, as readers use it), the legacy layout, and the overwrite refusal.

Datasets are written directly (tests/helpers/datasets.py, no Beam), a few records each.
"""

import json
import os

import pytest

from glcic_tf.data import datasets
from glcic_tf.data import selections

from helpers.datasets import write_dataset, write_two_datasets


@pytest.fixture()
def folder(tmp_path):
    """Two datasets in one folder, with different constant colours (so different means)."""
    return write_two_datasets(tmp_path / "shards")


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


def test_folder_with_several_datasets_is_ambiguous(folder):
    with pytest.raises(datasets.DatasetError, match=r"holds 2 datasets \(bsd, urban\)"):
        selections.select(str(folder["dir"]), "train")


def test_folder_with_one_dataset_is_that_dataset(tmp_path):
    write_dataset(str(tmp_path / "only" / "ds"), train=2, val=1, shards=(1, 1))
    assert len(selections.select(str(tmp_path / "only"), "train").files) == 1


def test_paths_in_metadata_are_relative_to_the_metadata_file(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the dataset's folder
    moved = tmp_path / "elsewhere"
    os.rename(folder["dir"], moved)
    selection = selections.select(os.path.relpath(moved / "urban"), "val")
    assert [os.path.basename(f) for f in selection.files] == ["urban-val-00000-of-00001.tfrecord"]
    assert all(os.path.exists(f) for f in selection.files)
    monkeypatch.chdir(moved.parent.parent)
    assert len(selections.select(str(moved / "urban"), "train").files) == 2


def test_a_missing_listed_shard_is_named(folder):
    os.remove(folder["dir"] / "urban-train-00001-of-00002.tfrecord")
    with pytest.raises(FileNotFoundError, match="urban-train-00001-of-00002.tfrecord, which "
                                                "does not exist"):
        selections.select(str(folder["dir"] / "urban"), "train")


def test_legacy_metadata_without_a_name_belongs_to_its_folder(tmp_path):
    write_dataset(str(tmp_path / "train"), info_name="dataset_info.json")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mean_pixel": [0.25, 0.5, 0.75]}))
    selection = selections.select(str(tmp_path / "*.tfrecord"), "train")
    assert selection.mean_pixel == (0.25, 0.5, 0.75)


def test_old_layout_folder_with_several_prefixes_is_ambiguous(tmp_path):
    write_dataset(str(tmp_path / "urban"), info_name="unused.json")
    write_dataset(str(tmp_path / "sun"), info_name="dataset_info.json")
    with pytest.raises(datasets.DatasetError, match="migrate: python pipelines/migrate_data"):
        selections.select(str(tmp_path), "train")


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
