"""Datasets on disk: one prefix = one dataset, its metadata file, and how readers find it.

A dataset written by `pipelines/make_tfrecords.py --output DIR/NAME` is the set of files

* `DIR/NAME-train-SSSSS-of-NNNNN.tfrecord`, `DIR/NAME-val-SSSSS-of-MMMMM.tfrecord` (shards),
* `DIR/NAME-rejects.jsonl` (files that were refused, one JSON object a line),
* `DIR/NAME-dataset_info.json` (the metadata: counts, mean pixel, shard files, ...),

so several datasets share a folder without touching each other's files. Paths inside the
metadata (`shard_files`, `shard_patterns`, `rejects_file`) are relative to the metadata file's
folder (local paths, `gs://`, any `tf.io.gfile` file system), so a dataset can be moved or read
from any working directory.

`--data` of `train.py`, `validate_data.py` and `evaluate.py` takes either a dataset, given as its
prefix (`DIR/NAME`), its metadata file (`DIR/NAME-dataset_info.json`) or a folder holding exactly
one dataset, or globs of shards (comma-separated for several). `select(spec, split)` turns either
into the shard files (checked: each must be a TFRecord of `tf.train.Example`s with
`image/encoded`, see `data.check_shards`) and the metadata they belong to: a shard
`DIR/NAME-SPLIT-...tfrecord` belongs to `DIR/NAME-dataset_info.json`.

Datasets written before this layout have one `DIR/dataset_info.json` whose `name` is the prefix's
last part; they are still read (the file belongs to the shards of that name only; a file without
a `name` belongs to every shard in its folder, as before). `migrate(DIR)` (`python
pipelines/migrate_datasets.py DIR`) renames it to the new layout, and with `recompute=True`
rebuilds the metadata of prefixes that have shards but lost their metadata (the old layout let a
second dataset in the same folder overwrite the first's) by reading the shards.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import posixpath
import re
from typing import Sequence

import tensorflow as tf

INFO_SUFFIX = "-dataset_info.json"
LEGACY_INFO_NAME = "dataset_info.json"
REJECTS_SUFFIX = "-rejects.jsonl"
FORMAT_VERSION = 2
SPLITS = ("train", "val")
MIGRATE_COMMAND = "python pipelines/migrate_datasets.py"

# The shard names Beam's WriteToTFRecord gives (`-SSSSS-of-NNNNN`, more digits past 99999).
_SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<split>train|val)-(?P<index>\d{5,})-of-"
                       r"(?P<count>\d{5,})\.tfrecord$")


class DatasetError(ValueError):
    """A dataset that cannot be used as given (exists already, inconsistent, ambiguous)."""


class DatasetExistsError(DatasetError, FileExistsError):
    """Writing a dataset whose prefix already holds files, without `overwrite`."""


# --- names ---------------------------------------------------------------------------------------


def _split_path(path: str) -> tuple[str, str]:
    """(folder, last part) of a local path or URL (`gs://bucket/dir/name`)."""
    path = path.rstrip("/")
    directory, name = posixpath.split(path)
    if directory.endswith(":/"):  # "gs://bucket" split as ("gs:/", "bucket")
        return "", path
    return directory, name


def join(directory: str, name: str) -> str:
    """`name` relative to `directory` (absolute paths and URLs are returned as they are)."""
    if not directory or name.startswith("/") or "://" in name:
        return name
    return directory.rstrip("/") + "/" + name


def info_path(prefix: str) -> str:
    """The metadata file of the dataset with output prefix `prefix` (`DIR/NAME`)."""
    return prefix + INFO_SUFFIX


def rejects_path(prefix: str) -> str:
    return prefix + REJECTS_SUFFIX


def shard_name_parts(path: str) -> tuple[str, str] | None:
    """(prefix, split) of a shard named `PREFIX-SPLIT-SSSSS-of-NNNNN.tfrecord`, else None."""
    directory, name = _split_path(path)
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    return join(directory, match["name"]), match["split"]


def prefix_files(prefix: str) -> list[str]:
    """The existing files of the dataset `prefix`: shards, rejects, metadata (not legacy)."""
    directory, name = _split_path(prefix)
    found = []
    for path in tf.io.gfile.glob(_glob_escape(prefix) + "-*"):
        base = _split_path(path)[1]
        match = _SHARD_RE.match(base)
        if ((match is not None and match["name"] == name)
                or base in (name + INFO_SUFFIX, name + REJECTS_SUFFIX)):
            found.append(path)
    return sorted(found)


def _glob_escape(path: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", path)


def _legacy_info_for(prefix: str) -> str | None:
    """The old-layout `DIR/dataset_info.json` when it belongs to `prefix`, else None."""
    directory, name = _split_path(prefix)
    path = join(directory, LEGACY_INFO_NAME)
    if not tf.io.gfile.exists(path):
        return None
    try:
        owner = _read_json(path).get("name")
    except DatasetError:
        return None
    return path if owner in (None, name) else None


# --- metadata ------------------------------------------------------------------------------------


def _read_json(path: str) -> dict:
    try:
        with tf.io.gfile.GFile(path) as f:
            info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a JSON dataset metadata file ({e})") from e
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object of dataset metadata, got "
                           f"{type(info).__name__}")
    return info


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset's metadata, read from `info_path`.

    Attributes:
      info_path: the metadata file (`PREFIX-dataset_info.json`, or a legacy `dataset_info.json`).
      info: its content.
      legacy: True for the old one-per-folder `dataset_info.json`.
    """

    info_path: str
    info: dict
    legacy: bool = False

    @property
    def directory(self) -> str:
        return _split_path(self.info_path)[0]

    @property
    def name(self) -> str | None:
        name = self.info.get("name")
        if name:
            return name
        base = _split_path(self.info_path)[1]
        return base[:-len(INFO_SUFFIX)] if base.endswith(INFO_SUFFIX) else None

    @property
    def prefix(self) -> str | None:
        return join(self.directory, self.name) if self.name else None

    @property
    def mean_pixel(self) -> tuple[float, float, float] | None:
        mean = self.info.get("mean_pixel")
        return tuple(float(v) for v in mean) if mean is not None else None

    def count(self, split: str) -> int | None:
        return self.info.get("counts", {}).get(split)

    def resolve(self, relative: str) -> str:
        """A path of the metadata (relative to its folder) as a usable path."""
        return join(self.directory, relative)

    def files(self, split: str) -> list[str]:
        """The shard files of `split` ("train", "val" or "all"), checked to exist.

        Raises:
          DatasetError: unknown split, or the metadata names no shard for it.
          FileNotFoundError: a listed shard is missing (names it).
        """
        if split == "all":
            return self.files("train") + (self.files("val") if self.has_split("val") else [])
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
        listed = self.info.get("shard_files", {}).get(split)
        if listed is None:  # metadata without a file list (hand-written, very old)
            pattern = self.info.get("shard_patterns", {}).get(split)
            if pattern is None and self.name:
                pattern = f"{self.name}-{split}-*-of-*.tfrecord"
            if pattern is None:
                raise DatasetError(f"{self.info_path} names no shards of the {split} split "
                                   f"(no 'shard_files' or 'shard_patterns')")
            files = sorted(tf.io.gfile.glob(self.resolve(pattern)))
            if not files:
                raise FileNotFoundError(f"{self.info_path}: no shard of the {split} split "
                                        f"matches {self.resolve(pattern)!r}")
            return files
        files = [self.resolve(name) for name in listed]
        for path in files:
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(
                    f"dataset {self.info_path} lists the {split} shard {path}, which does not "
                    f"exist (moved or deleted?); re-create the dataset with "
                    f"make_tfrecords.py --overwrite")
        if not files:
            raise DatasetError(f"{self.info_path} lists no {split} shard")
        return files

    def has_split(self, split: str) -> bool:
        count = self.count(split)
        if count is not None:
            return count > 0
        return bool(self.info.get("shard_files", {}).get(split)
                    or self.info.get("shard_patterns", {}).get(split))

    def describe(self) -> str:
        counts = self.info.get("counts", {})
        shown = ", ".join(f"{counts[s]} {s}" for s in SPLITS if s in counts)
        return f"{self.info_path}" + (f" ({shown})" if shown else "")


def read(path: str) -> Dataset:
    """Reads a metadata file (new or legacy layout) and checks its mean pixel."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no dataset metadata at {path}")
    info = _read_json(path)
    mean = info.get("mean_pixel")
    if mean is not None and not (isinstance(mean, list) and len(mean) == 3):
        raise DatasetError(f"{path}: 'mean_pixel' must be a list of 3 numbers, got {mean!r}")
    return Dataset(path, info, legacy=_split_path(path)[1] == LEGACY_INFO_NAME)


def find(spec: str) -> Dataset | None:
    """The dataset named by `spec`, or None when `spec` names none (e.g. it is a glob).

    `spec` is a metadata file, a prefix (`DIR/NAME`, whose `DIR/NAME-dataset_info.json` exists,
    or whose shards sit beside a legacy `DIR/dataset_info.json` of that name) or a folder with
    exactly one dataset in it.

    Raises:
      DatasetError: a folder holding several datasets (lists them).
    """
    if not spec or any(c in spec for c in "*?["):
        return None
    base = _split_path(spec)[1]
    if (base.endswith(INFO_SUFFIX) or base == LEGACY_INFO_NAME) and tf.io.gfile.exists(spec):
        return read(spec)
    if tf.io.gfile.exists(info_path(spec)):
        return read(info_path(spec))
    if tf.io.gfile.isdir(spec):
        infos = sorted(tf.io.gfile.glob(join(_glob_escape(spec.rstrip("/")), "*" + INFO_SUFFIX)))
        legacy = join(spec.rstrip("/"), LEGACY_INFO_NAME)
        if len(infos) == 1:
            return read(infos[0])
        if len(infos) > 1:
            names = [_split_path(p)[1][:-len(INFO_SUFFIX)] for p in infos]
            raise DatasetError(f"{spec} holds {len(infos)} datasets ({', '.join(names)}); pass "
                               f"one by its prefix, e.g. {join(spec.rstrip('/'), names[0])}")
        if tf.io.gfile.exists(legacy):
            dataset = read(legacy)
            names = sorted(_split_path(p)[1] for p in shard_prefixes(spec))
            if dataset.info.get("name") and names and names != [dataset.info["name"]]:
                raise DatasetError(
                    f"{spec} holds the shards of {len(names)} datasets ({', '.join(names)}) but "
                    f"one old-layout {LEGACY_INFO_NAME} (of {dataset.info['name']}); pass one "
                    f"by its prefix, or migrate: {MIGRATE_COMMAND} {spec} --recompute")
            return dataset
        return None
    legacy = _legacy_info_for(spec)
    if legacy is not None and prefix_files(spec):
        return read(legacy)
    return None


def owner_of(shard: str, cache: dict | None = None) -> Dataset | None:
    """The dataset a shard file belongs to: `PREFIX-dataset_info.json` for a shard named
    `PREFIX-SPLIT-SSSSS-of-NNNNN.tfrecord`, else a legacy `dataset_info.json` beside it that
    belongs to that prefix (or names no prefix); None when there is none."""
    cache = {} if cache is None else cache
    parts = shard_name_parts(shard)
    directory = _split_path(shard)[0]
    candidates = []
    if parts is not None:
        candidates.append(info_path(parts[0]))
    candidates.append(join(directory, LEGACY_INFO_NAME))
    for candidate in candidates:
        if candidate not in cache:
            dataset = read(candidate) if tf.io.gfile.exists(candidate) else None
            cache[candidate] = dataset
        dataset = cache[candidate]
        if dataset is None:
            continue
        if dataset.legacy and dataset.info.get("name") not in (
                None, parts and _split_path(parts[0])[1]):
            continue
        return dataset
    return None


# --- selections (what --data names) -------------------------------------------------------------


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
      check: check that every file is a TFRecord of our schema (`data.check_shards`).

    Raises:
      FileNotFoundError: a glob matches nothing, a listed shard is missing.
      DatasetError: bad metadata, a folder with several datasets.
      data.InvalidShardError: a file is not a TFRecord of `tf.train.Example`s with
        `image/encoded` (names it and what was expected).
    """
    from glcic_tf import data as data_lib

    items = split_spec(spec)
    owners: dict[str, Dataset | None] = {}
    named: list[Dataset] = []
    globbed: list[str] = []
    for item in items:
        dataset = find(item)
        if dataset is None:
            globbed += data_lib.list_files(item, check=False)
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
        data_lib.check_shards(files)
    datasets: dict[str, Dataset] = {}
    for f in files:
        if owners[f] is not None:
            datasets.setdefault(owners[f].info_path, owners[f])
    shown = spec if isinstance(spec, str) else ",".join(spec)
    return Selection(spec=shown, files=tuple(files), datasets=tuple(datasets.values()),
                     unowned=tuple(f for f in files if owners[f] is None), named=tuple(named),
                     split=split)


# --- writing -------------------------------------------------------------------------------------


def existing(prefix: str) -> list[str]:
    """Files that make `prefix` an existing dataset: its own files and a legacy metadata file
    that belongs to it."""
    found = prefix_files(prefix)
    legacy = _legacy_info_for(prefix)
    if legacy is not None and (found or _read_json(legacy).get("name")):
        found.append(legacy)
    return found


def prepare_output(prefix: str, overwrite: bool) -> list[str]:
    """Refuses an existing dataset at `prefix`, or with `overwrite` removes its files (metadata
    first, so an interrupted overwrite never leaves metadata that names other shards).

    Returns:
      The removed files.

    Raises:
      DatasetExistsError: `prefix` holds files and `overwrite` is False.
    """
    found = existing(prefix)
    if not found:
        return []
    if not overwrite:
        shards = [f for f in found if shard_name_parts(f)]
        shown = ", ".join(_split_path(f)[1] for f in found[:3]) + (
            f", ... ({len(found)} files)" if len(found) > 3 else "")
        raise DatasetExistsError(
            f"dataset {prefix} already exists ({len(shards)} shard(s); {shown}); pass "
            f"--overwrite to replace it (its old files are removed first), or choose another "
            f"--output prefix")
    metadata = [f for f in found if f.endswith(INFO_SUFFIX) or f.endswith(LEGACY_INFO_NAME)]
    for path in metadata + [f for f in found if f not in metadata]:
        tf.io.gfile.remove(path)
    return found


# --- migration -----------------------------------------------------------------------------------


def shard_prefixes(directory: str) -> dict[str, dict[str, list[str]]]:
    """{prefix: {split: shard files}} of the shards named PREFIX-SPLIT-... in `directory`."""
    out: dict[str, dict[str, list[str]]] = {}
    for path in sorted(tf.io.gfile.glob(join(_glob_escape(directory.rstrip("/")), "*.tfrecord"))):
        parts = shard_name_parts(path)
        if parts is not None:
            out.setdefault(parts[0], {}).setdefault(parts[1], []).append(path)
    return out


def upgrade_info(info: dict, name: str, shard_files: dict[str, list[str]] | None = None) -> dict:
    """Old metadata in the current format: relative names, format version, shard counts."""
    info = dict(info)
    info["format_version"] = FORMAT_VERSION
    info["name"] = name
    if shard_files is not None:
        info["shard_files"] = {s: sorted(_split_path(f)[1] for f in shard_files.get(s, []))
                               for s in SPLITS}
    files = info.get("shard_files", {})
    if files:
        info["num_shards"] = {s: len(files.get(s, [])) for s in SPLITS}
        info["shard_patterns"] = {s: f"{name}-{s}-*-of-{len(files.get(s, [])):05d}.tfrecord"
                                  for s in SPLITS}
    info.setdefault("rejects_file", name + REJECTS_SUFFIX)
    return info


def write_info(path: str, info: dict) -> None:
    """Writes metadata through a temporary file renamed into place."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def recompute_info(prefix: str, shard_files: dict[str, list[str]]) -> dict:
    """Metadata of a dataset from its shards alone: counts, exact train mean pixel, sizes.

    Reads and decodes every record (one pass, parallel decode); rejects are not known.
    """
    from glcic_tf import data as data_lib

    def stats(serialized):
        image = data_lib.decode_example(serialized)["image"]
        shape = tf.shape(image, out_type=tf.int64)
        return (shape[0], shape[1],
                tf.reduce_sum(tf.cast(tf.reshape(image, [-1, 3]), tf.int64), axis=0))

    name = _split_path(prefix)[1]
    info = {"name": name, "format_version": FORMAT_VERSION, "recomputed_from_shards": True,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "counts": {}, "num_pixels": {}, "split_mean_pixel": {}, "size_stats": {}}
    for split in SPLITS:
        files = shard_files.get(split, [])
        heights, widths, sums, pixels = [], [], [0, 0, 0], 0
        if files:
            ds = tf.data.TFRecordDataset(files).map(stats, num_parallel_calls=tf.data.AUTOTUNE)
            for h, w, s in ds.as_numpy_iterator():
                heights.append(int(h))
                widths.append(int(w))
                pixels += int(h) * int(w)
                sums = [a + int(b) for a, b in zip(sums, s)]
        n = len(heights)
        info["counts"][split] = n
        info["num_pixels"][split] = pixels
        info["split_mean_pixel"][split] = [v / pixels / 255.0 for v in sums] if pixels else None
        info["size_stats"][split] = {
            key: {"min": min(v) if v else None, "max": max(v) if v else None,
                  "mean": sum(v) / n if n else None}
            for key, v in (("height", heights), ("width", widths))}
    info["mean_pixel"] = info["split_mean_pixel"]["train"]
    return upgrade_info(info, name, shard_files)


def migrate(directory: str, *, recompute: bool = False,
            dry_run: bool = False) -> list[str]:
    """Moves a folder of old-layout datasets to one metadata file per prefix.

    * The old `DIR/dataset_info.json` becomes `DIR/NAME-dataset_info.json` (NAME: its `name`, or
      the folder's only shard prefix), with relative shard names and the current format.
    * With `recompute`, every other prefix that has shards but no metadata (its metadata was
      overwritten by a later dataset in the same folder) gets metadata computed from its shards.

    Returns:
      One line per action taken (or, with `dry_run`, that would be taken).
    """
    directory = directory.rstrip("/")
    if not tf.io.gfile.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a folder")
    prefixes = shard_prefixes(directory)
    actions = []
    legacy = join(directory, LEGACY_INFO_NAME)
    if tf.io.gfile.exists(legacy):
        old = _read_json(legacy)
        name = old.get("name")
        if not name:
            if len(prefixes) != 1:
                raise DatasetError(
                    f"{legacy} names no dataset and the folder holds {len(prefixes)} shard "
                    f"prefixes; cannot tell which dataset it belongs to")
            name = _split_path(next(iter(prefixes)))[1]
        prefix = join(directory, name)
        target = info_path(prefix)
        if tf.io.gfile.exists(target):
            raise DatasetError(f"{target} exists already; remove {legacy} by hand if it is stale")
        actions.append(f"{legacy} -> {target}")
        if not dry_run:
            write_info(target, upgrade_info(old, name, prefixes.get(prefix)))
            tf.io.gfile.remove(legacy)
    for prefix, files in sorted(prefixes.items()):
        target = info_path(prefix)
        if tf.io.gfile.exists(target) or any(a.endswith(" -> " + target) for a in actions):
            continue
        if not recompute:
            actions.append(f"{prefix}: shards without metadata (run with --recompute to rebuild "
                           f"it from the shards)")
            continue
        actions.append(f"{prefix}: metadata recomputed from {sum(map(len, files.values()))} "
                       f"shard(s) -> {target}")
        if not dry_run:
            write_info(target, recompute_info(prefix, files))
    return actions
