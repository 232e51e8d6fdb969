"""What `--data` names: datasets and/or globs of shards, resolved to shard files and metadata.

`--data` of `train.py`, `validate_data.py` and `evaluate.py` takes either a dataset, given as its
prefix (`DIR/NAME`), its metadata file (`DIR/NAME-dataset_info.json`) or a folder holding exactly
one dataset (`glcic_tf.data.datasets.find`), or globs of shards (comma-separated for several).
`select(spec, split)` turns either into a `Selection`: the shard files (checked: each must be a
TFRecord of `tf.train.Example`s with `image/encoded`, see `glcic_tf.data.shards.check_shards`)
and the metadata they belong to (`datasets.owner_of`), which gives the mean pixel of the data.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from glcic_tf.data import shards
from glcic_tf.data.datasets import Dataset, find, owner_of, shard_name_parts


@dataclasses.dataclass(frozen=True)
class Selection:
    """The shards named by a `--data` value and the datasets they belong to.

    Attributes:
      spec: what was given (shown in messages).
      files: the shard files, sorted, de-duplicated, checked.
      datasets: the distinct datasets the files belong to (metadata order of first use).
      unowned: files that belong to no dataset metadata.
      named: the datasets given by name (prefix / metadata file / folder) rather than by glob.
      split: the split taken from named datasets.
    """

    spec: str
    files: tuple[str, ...]
    datasets: tuple[Dataset, ...]
    unowned: tuple[str, ...]
    named: tuple[Dataset, ...]
    split: str

    @property
    def mean_pixel(self) -> tuple[float, float, float] | None:
        """The train mean pixel of the datasets behind every file; None when a file has none.

        Several datasets: their means weighted by train pixel count (exact), or by train
        image count for metadata that records no pixel count.
        """
        if self.unowned or not self.datasets:
            return None
        means = [(d.mean_pixel, d) for d in self.datasets]
        if any(m is None for m, _ in means):
            return None
        if len(means) == 1:
            return means[0][0]
        weights = [d.info.get("num_pixels", {}).get("train") for _, d in means]
        if any(w is None for w in weights):
            weights = [d.count("train") or 0 for _, d in means]
        total = float(sum(weights))
        if total <= 0:
            return None
        return tuple(sum(m[c] * w for (m, _), w in zip(means, weights)) / total
                     for c in range(3))

    def mean_pixel_source(self) -> str:
        return " + ".join(d.info_path for d in self.datasets)

    def val_files(self) -> list[str]:
        """The files named like a dataset's val shards (e.g. a glob that also caught val)."""
        return [f for f in self.files if (shard_name_parts(f) or ("", ""))[1] == "val"]

    def val_selection(self) -> "Selection | None":
        """The val split of the named datasets (None: no named dataset with a val split)."""
        named = [d for d in self.named if d.has_split("val")]
        if not named:
            return None
        return select([d.info_path if d.legacy or not d.prefix else d.prefix for d in named],
                      split="val")


def split_spec(spec: str | Sequence[str]) -> list[str]:
    """A `--data` value as a list: comma-separated string or a sequence of strings."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s.strip() for s in items if isinstance(s, str) and s.strip()]
    if not items:
        raise ValueError(f"no data given ({spec!r}): expected a dataset prefix (DIR/NAME), its "
                         f"NAME-dataset_info.json, or a glob of TFRecord shards")
    return items


def select(spec: str | Sequence[str], split: str = "train", *, check: bool = True) -> Selection:
    """Resolves `--data`: datasets (their `split` shards) and/or shard globs.

    Args:
      spec: a prefix, metadata file or one-dataset folder, or a glob; comma-separated (or a
        list) for several.
      split: "train", "val" or "all": which shards of a dataset given by name.
      check: check that every file is a TFRecord of our schema (`shards.check_shards`).

    Raises:
      FileNotFoundError: a glob matches nothing, a listed shard is missing.
      datasets.DatasetError: bad metadata, a folder with several datasets.
      shards.InvalidShardError: a file is not a TFRecord of `tf.train.Example`s with
        `image/encoded` (names it and what was expected).
    """
    items = split_spec(spec)
    owners: dict[str, Dataset | None] = {}
    named: list[Dataset] = []
    globbed: list[str] = []
    for item in items:
        dataset = find(item)
        if dataset is None:
            globbed += shards.list_files(item, check=False)
            continue
        if dataset.info_path not in {d.info_path for d in named}:
            named.append(dataset)
        for f in dataset.files(split):
            owners[f] = dataset
    cache: dict = {d.info_path: d for d in named}
    for f in globbed:
        if f not in owners:
            owners[f] = owner_of(f, cache)
    files = sorted(owners)
    if check:
        shards.check_shards(files)
    datasets: dict[str, Dataset] = {}
    for f in files:
        if owners[f] is not None:
            datasets.setdefault(owners[f].info_path, owners[f])
    shown = spec if isinstance(spec, str) else ",".join(spec)
    return Selection(spec=shown, files=tuple(files), datasets=tuple(datasets.values()),
                     unowned=tuple(f for f in files if owners[f] is None), named=tuple(named),
                     split=split)
