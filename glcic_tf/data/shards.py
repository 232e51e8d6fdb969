"""Shard files: listing them, checking each is a TFRecord of this schema, finding corrupt records.

Every reader checks its files first (`list_files` -> `check_shards`): a file that is not a
TFRecord whose first record is a `tf.train.Example` with `image/encoded` (a JSON file caught by
a glob, a folder, TFDV statistics, ...) is an `InvalidShardError` naming the file and what was
expected, before tf.data sees it (schema: `glcic_tf.data.schema`).

## Corrupt records

Policy: a record that cannot be read (a shard truncated mid-record), parsed (garbage bytes) or
decoded (bytes that are not an image) either stops training with a clear error naming the shard,
or, with `data.skip_corrupt`, is skipped (by the input pipelines, `glcic_tf.data.input_pipeline`).

* `data.skip_corrupt=False` (default): tf.data's own error does not name the file, so iterate
  through `checked_iterator(dataset, file_pattern)` or catch `tf.errors.InvalidArgumentError` /
  `tf.errors.DataLossError` and raise `explain_data_error(error, file_pattern)`: it scans the
  shards (`find_corrupt_shards`) and raises `CorruptDataError` naming each corrupt shard, how
  many bad records it holds and the first problem.
* `data.skip_corrupt=True`: `ignore_errors(log_warning=True)` right after decoding drops the
  record; tf.data logs one warning per skipped record ("Error raised with error message ..."),
  and `find_corrupt_shards` counts them exactly per shard, offline.
"""

from __future__ import annotations

import concurrent.futures
import functools
import struct
from typing import Iterator, Sequence

import tensorflow as tf

from glcic_tf.data.schema import FEATURE_ENCODED, decode_example

# Bytes a TFRecord adds around each record: length (8), its CRC (4), data CRC (4).
_RECORD_OVERHEAD = 16


# --- files ---------------------------------------------------------------------------------------


class InvalidShardError(ValueError):
    """An input file that is not a TFRecord of `tf.train.Example`s in this schema."""


_EXPECTED_SHARD = ("expected TFRecord files of tf.train.Example records with an image/encoded "
                   "bytes feature, as pipelines/make_tfrecords.py writes them")
# A first record larger than this is taken for garbage framing, not an image.
_MAX_RECORD_BYTES = 1 << 31


@functools.lru_cache(maxsize=1)
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (pure Python: used on 8-byte length headers)."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _looks_like(head: bytes) -> str:
    text = head.lstrip()[:1]
    if text in (b"{", b"["):
        return "it looks like JSON text"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "it looks like an image file, not a TFRecord of images"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes that are not TFRecord framing"
    return "it looks like text"


def check_shard_file(path: str) -> str | None:
    """None when `path` starts like a shard of this schema, else what it is instead.

    Reads the first record only: its TFRecord length header and CRC, and whether it parses as a
    `tf.train.Example` holding `image/encoded` bytes. An empty file (a TFRecord of no record)
    passes; corrupt records further in are `find_corrupt_shards`'s job.
    """
    if tf.io.gfile.isdir(path):
        return "it is a folder"
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            header = f.read(12)
            if not header:
                return None
            if len(header) < 12:
                return (f"{len(header)} bytes, too short for a TFRecord record header "
                        f"({_looks_like(header)})")
            length, crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != crc or length > _MAX_RECORD_BYTES:
                return f"no TFRecord framing: {_looks_like(header)}"
            payload = f.read(length)
    except (tf.errors.OpError, OSError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if len(payload) < length:
        return f"truncated inside its first record ({len(payload)} of {length} bytes)"
    try:
        example = tf.train.Example.FromString(payload)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        return f"its first record is not a tf.train.Example ({type(e).__name__})"
    feature = example.features.feature.get(FEATURE_ENCODED)
    if feature is None or not feature.bytes_list.value:
        names = ", ".join(sorted(example.features.feature)) or "none"
        return (f"its first record is a tf.train.Example without {FEATURE_ENCODED} bytes "
                f"(features: {names})")
    return None


def check_shards(files: Sequence[str]) -> None:
    """Raises `InvalidShardError` naming every file that is not a shard of this schema.

    Files are checked in parallel threads (one small read each), so remote shards are cheap.
    """
    files = list(files)
    if not files:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(files))) as pool:
        problems = [(f, p) for f, p in zip(files, pool.map(check_shard_file, files)) if p]
    if not problems:
        return
    shown = "; ".join(f"{f}: {p}" for f, p in problems[:3])
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    hint = ""
    if any(f.endswith((".json", ".jsonl")) for f, _ in problems):
        hint = (" (a glob over a dataset prefix also catches its metadata and rejects files: "
                "pass the dataset itself, --data DIR/NAME, or a glob ending in .tfrecord)")
    what = "is not a TFRecord shard" if len(problems) == 1 else (
        f"{len(problems)} files are not TFRecord shards")
    raise InvalidShardError(
        f"{what} of glcic_tf images: {shown}{more}; {_EXPECTED_SHARD}{hint}")


def list_files(file_pattern: str | Sequence[str], check: bool = True) -> list[str]:
    """The sorted, de-duplicated files matching one glob pattern or several.

    Args:
      file_pattern: a glob or a list of them.
      check: also check that each file is a shard of this schema (`check_shards`).

    Raises:
      FileNotFoundError: a pattern matches no file (the message names the pattern).
      InvalidShardError: with `check`, a file is not a TFRecord of this schema (names it).
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    if not patterns:
        raise ValueError("file_pattern is empty: expected a glob pattern such as "
                         "'shards/train-*.tfrecord' or a list of them")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"file patterns must be non-empty strings, got {pattern!r}")
    # Plain paths (e.g. a dataset's shard list) need no listing: checked in parallel threads.
    literal = [p for p in patterns if not any(c in p for c in "*?[")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(literal) or 1)) as pool:
        exists = dict(zip(literal, pool.map(tf.io.gfile.exists, literal)))
    files: set[str] = set()
    for pattern in patterns:
        matched = ([pattern] if exists[pattern] else []) if pattern in exists else (
            tf.io.gfile.glob(pattern))
        if not matched:
            raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
        files.update(matched)
    files_sorted = sorted(files)
    if check:
        check_shards(files_sorted)
    return files_sorted


# --- corrupt records -----------------------------------------------------------------------------


class CorruptDataError(RuntimeError):
    """A shard holds records that cannot be read, parsed or decoded."""


def _scan_shard(shard: str) -> str | None:
    """None when every record of `shard` reads, parses and decodes; else what is wrong."""
    size = tf.io.gfile.stat(shard).length
    problem = check_shard_file(shard)
    if problem is not None:
        return f"not a TFRecord shard of glcic_tf images: {problem}; {_EXPECTED_SHARD}"

    # Fast pass: the whole shard through tf.data in parallel; most shards stop here.
    def record_bytes(serialized):
        image = decode_example(serialized)["image"]  # raises on a bad record
        # The pixel count is returned so that the decode is not pruned as unused.
        return (tf.cast(tf.strings.length(serialized), tf.int64) + _RECORD_OVERHEAD,
                tf.size(image, out_type=tf.int64))

    try:
        framed, _ = (tf.data.TFRecordDataset(shard)
                     .map(record_bytes, num_parallel_calls=tf.data.AUTOTUNE)
                     .reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
                             lambda total, x: (total[0] + x[0], total[1] + x[1])))
        if int(framed) == size:
            return None
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
        pass

    # Slow pass, record by record, to count and locate the problems.
    bad, first, framed, index = 0, None, 0, 0
    iterator = iter(tf.data.TFRecordDataset(shard))
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            break
        except tf.errors.DataLossError as e:
            bad += 1
            first = first or f"record {index} is truncated or its framing is corrupt " \
                             f"({_first_line(e)})"
            framed = size  # the rest of the file cannot be read
            break
        try:
            decode_example(serialized)
        except tf.errors.InvalidArgumentError as e:
            bad += 1
            first = first or f"record {index} does not parse or decode ({_first_line(e)})"
        framed += int(tf.strings.length(serialized)) + _RECORD_OVERHEAD
        index += 1
    if framed != size:
        bad += 1
        first = first or (f"{size - framed} trailing bytes after record {index - 1}: the file "
                          f"is truncated inside a record header")
    if bad == 0:
        return None
    return f"{bad} bad record(s), {index} complete record(s) read; first: {first}"


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0][:300] if message.strip() else type(error).__name__


def find_corrupt_shards(file_pattern: str | Sequence[str]) -> list[tuple[str, str]]:
    """Scans shards one by one: (shard, problem) for each with unreadable records.

    A problem is a record truncated mid-way, bytes that are not a tf.train.Example, an image
    that does not decode, or trailing bytes of a cut-off record header (which tf.data silently
    ignores). Clean shards cost one parallel decode pass; corrupt ones a second, slower pass
    that counts and locates the bad records.
    """
    found = []
    for shard in list_files(file_pattern, check=False):
        problem = _scan_shard(shard)
        if problem is not None:
            found.append((shard, problem))
    return found


def _shown_patterns(file_pattern: str | Sequence[str]) -> str:
    if isinstance(file_pattern, str):
        return file_pattern
    patterns = list(file_pattern)
    shown = ", ".join(patterns[:3])
    return shown + (f", ... ({len(patterns)} patterns)" if len(patterns) > 3 else "")


def explain_data_error(error: Exception, file_pattern: str | Sequence[str]) -> CorruptDataError:
    """A `CorruptDataError` naming the corrupt shard(s) behind a tf.data read/decode error.

    Use where a training loop catches `tf.errors.InvalidArgumentError` or
    `tf.errors.DataLossError` from the input pipeline: `raise explain_data_error(e, pattern)
    from e`. It scans every shard matching `file_pattern`, so it takes about one pass over the
    data.
    """
    shown = _shown_patterns(file_pattern)
    corrupt = find_corrupt_shards(file_pattern)
    if not corrupt:
        return CorruptDataError(
            f"reading {shown} failed ({_first_line(error)}) but no shard holds an unreadable "
            f"record; the error comes from elsewhere in the input pipeline")
    listing = "; ".join(f"{shard}: {problem}" for shard, problem in corrupt)
    return CorruptDataError(
        f"corrupt TFRecord shard(s) in {shown}: {listing}. Re-create these shards, remove them, "
        f"or set data.skip_corrupt=true to skip bad records (tf.data error: "
        f"{_first_line(error)})")


def checked_iterator(dataset: tf.data.Dataset,
                     file_pattern: str | Sequence[str]) -> Iterator[dict]:
    """Iterates `dataset`, turning a corrupt-record error into a `CorruptDataError` naming the
    shard(s)."""
    iterator = iter(dataset)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise explain_data_error(e, file_pattern) from e
        yield element
