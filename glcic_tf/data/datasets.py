"""Datasets on disk: one prefix = one dataset, its metadata file, and how readers find it.

A dataset written by `pipelines/make_tfrecords.py --output DIR/NAME` is the set of files

* `DIR/NAME-train-SSSSS-of-NNNNN.tfrecord`, `DIR/NAME-val-SSSSS-of-MMMMM.tfrecord` (shards),
* `DIR/NAME-rejects.jsonl` (files that were refused, one JSON object a line),
* `DIR/NAME-dataset_info.json` (the metadata: counts, mean pixel, shard files, ...),

so several datasets share a folder without touching each other's files. Paths inside the
metadata (`shard_files`, `shard_patterns`, `rejects_file`) are relative to the metadata file's
folder (local paths, `gs://`, any `tf.io.gfile` file system), so a dataset can be moved or read
from any working directory.

A dataset is named by its prefix (`DIR/NAME`), its metadata file (`DIR/NAME-dataset_info.json`)
or a folder holding exactly one dataset (`find`); a shard `DIR/NAME-SPLIT-...tfrecord` belongs to
`DIR/NAME-dataset_info.json` (`owner_of`). What `--data` names (datasets and/or globs of shards)
is resolved by `glcic_tf.data.selections.select`. Writers refuse a prefix that holds a dataset
unless told to overwrite it (`prepare_output`).

Datasets written before this layout have one `DIR/dataset_info.json` whose `name` is the prefix's
last part; they are still read (the file belongs to the shards of that name only; a file without
a `name` belongs to every shard in its folder, as before). `glcic_tf.data.migration` (`python
pipelines/migrate_datasets.py DIR`) moves them to the new layout.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re

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


def split_path(path: str) -> tuple[str, str]:
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
    directory, name = split_path(path)
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    return join(directory, match["name"]), match["split"]


def prefix_files(prefix: str) -> list[str]:
    """The existing files of the dataset `prefix`: shards, rejects, metadata (not legacy)."""
    directory, name = split_path(prefix)
    found = []
    for path in tf.io.gfile.glob(_glob_escape(prefix) + "-*"):
        base = split_path(path)[1]
        match = _SHARD_RE.match(base)
        if ((match is not None and match["name"] == name)
                or base in (name + INFO_SUFFIX, name + REJECTS_SUFFIX)):
            found.append(path)
    return sorted(found)


def _glob_escape(path: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", path)


def _legacy_info_for(prefix: str) -> str | None:
    """The old-layout `DIR/dataset_info.json` when it belongs to `prefix`, else None."""
    directory, name = split_path(prefix)
    path = join(directory, LEGACY_INFO_NAME)
    if not tf.io.gfile.exists(path):
        return None
    try:
        owner = read_json(path).get("name")
    except DatasetError:
        return None
    return path if owner in (None, name) else None


# --- metadata ------------------------------------------------------------------------------------


def read_json(path: str) -> dict:
    """A metadata file's JSON object (unchecked: `read` checks it)."""
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
        return split_path(self.info_path)[0]

    @property
    def name(self) -> str | None:
        name = self.info.get("name")
        if name:
            return name
        base = split_path(self.info_path)[1]
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
    info = read_json(path)
    mean = info.get("mean_pixel")
    if mean is not None and not (isinstance(mean, list) and len(mean) == 3):
        raise DatasetError(f"{path}: 'mean_pixel' must be a list of 3 numbers, got {mean!r}")
    return Dataset(path, info, legacy=split_path(path)[1] == LEGACY_INFO_NAME)


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
    base = split_path(spec)[1]
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
            names = [split_path(p)[1][:-len(INFO_SUFFIX)] for p in infos]
            raise DatasetError(f"{spec} holds {len(infos)} datasets ({', '.join(names)}); pass "
                               f"one by its prefix, e.g. {join(spec.rstrip('/'), names[0])}")
        if tf.io.gfile.exists(legacy):
            dataset = read(legacy)
            names = sorted(split_path(p)[1] for p in shard_prefixes(spec))
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
    directory = split_path(shard)[0]
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
                None, parts and split_path(parts[0])[1]):
            continue
        return dataset
    return None


def read_dataset_info(path: str) -> dict:
    """The metadata of a dataset: its prefix, its `PREFIX-dataset_info.json`, a folder with one
    dataset, or a legacy `dataset_info.json`."""
    dataset = find(path)
    if dataset is None:
        raise FileNotFoundError(f"no dataset metadata for {path} (expected "
                                f"PREFIX{INFO_SUFFIX}, given as PREFIX or its path)")
    return dataset.info


def shard_prefixes(directory: str) -> dict[str, dict[str, list[str]]]:
    """{prefix: {split: shard files}} of the shards named PREFIX-SPLIT-... in `directory`."""
    out: dict[str, dict[str, list[str]]] = {}
    for path in sorted(tf.io.gfile.glob(join(_glob_escape(directory.rstrip("/")), "*.tfrecord"))):
        parts = shard_name_parts(path)
        if parts is not None:
            out.setdefault(parts[0], {}).setdefault(parts[1], []).append(path)
    return out


# --- writing -------------------------------------------------------------------------------------


def existing(prefix: str) -> list[str]:
    """Files that make `prefix` an existing dataset: its own files and a legacy metadata file
    that belongs to it."""
    found = prefix_files(prefix)
    legacy = _legacy_info_for(prefix)
    if legacy is not None and (found or read_json(legacy).get("name")):
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
        shown = ", ".join(split_path(f)[1] for f in found[:3]) + (
            f", ... ({len(found)} files)" if len(found) > 3 else "")
        raise DatasetExistsError(
            f"dataset {prefix} already exists ({len(shards)} shard(s); {shown}); pass "
            f"--overwrite to replace it (its old files are removed first), or choose another "
            f"--output prefix")
    metadata = [f for f in found if f.endswith(INFO_SUFFIX) or f.endswith(LEGACY_INFO_NAME)]
    for path in metadata + [f for f in found if f not in metadata]:
        tf.io.gfile.remove(path)
    return found
