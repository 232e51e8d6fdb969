"""glcic_tf.data.migration and pipelines/migrate_datasets.py: old-layout folders (one
dataset_info.json for several prefixes) moved to one metadata file per prefix."""

import json
import os

import numpy as np

from glcic_tf.data import migration
from glcic_tf.data import selections

from helpers.datasets import write_dataset


def test_legacy_layout_keeps_loading_and_names_its_owner(tmp_path):
    """Old layout: three datasets in one folder, one dataset_info.json (the last one's)."""
    d = tmp_path / "old"
    urban = write_dataset(str(d / "urban"), colour=(200, 10, 10), info_name="unused.json")
    write_dataset(str(d / "sun"), colour=(10, 200, 10), info_name="dataset_info.json")
    os.remove(d / "unused.json")
    sun = selections.select(str(d / "sun-train-*"), "train")
    assert sun.datasets[0].legacy and sun.mean_pixel[1] > 0.7
    assert len(selections.select(str(d / "sun"), "train").files) == 2  # the prefix works too
    lost = selections.select(str(d / "urban-train-*"), "train")
    assert lost.mean_pixel is None and len(lost.unowned) == 2  # never the other one's mean

    actions = migration.migrate(str(d), recompute=True)
    assert any("dataset_info.json -> " in a for a in actions)
    assert not (d / "dataset_info.json").exists()
    assert json.loads((d / "sun-dataset_info.json").read_text())["name"] == "sun"
    rebuilt = selections.select(str(d / "urban"), "train")
    np.testing.assert_allclose(rebuilt.mean_pixel, urban["mean_pixel"], rtol=1e-12)
    info = rebuilt.datasets[0].info
    assert info["counts"] == {"train": 4, "val": 2} and info["recomputed_from_shards"]
    assert migration.migrate(str(d)) == []  # nothing left to do


def test_migrate_cli_dry_run_then_migrate(tmp_path, capsys):
    from helpers.scripts import load_pipeline

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
