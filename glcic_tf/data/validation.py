"""Data validation of TFRecord shards with TensorFlow Data Validation (TFDV).

`validate(data, out_dir, ...)`, where `data` is a dataset (its prefix or metadata file: its train
split, compared with its val split) or globs of shards (`glcic_tf.data.selections.select`; every
file is checked to be a TFRecord of our schema first, and one that is not is named):

1. Computes statistics over the shards (`tfdv.generate_statistics_from_tfrecord`, a Beam
   pipeline; DirectRunner unless Beam options say otherwise) with image statistics for
   `image/encoded`: TFDV's `ImageStatsGenerator` only reports a feature as images when at least
   100 values were seen and 80% of them look like images; ours is restricted to `image/encoded`
   and always reports (`values_threshold=1`, `is_image_ratio_threshold=0`), so a shard full of
   broken bytes still yields a format histogram that the schema's image domain rejects.
2. Without `schema_path`: infers a schema (`schema.pbtxt` in `out_dir`) and tightens it to the
   `glcic_tf.data.schema` contract: all six features present in every example with exactly one
   value, `image/channels` in [3, 3], `image/height` and `image/width` >= `min_side`,
   `image/format` in {jpeg, png}, `image/encoded` 100% decodable image formats (`min_side`:
   given, else the dataset's own, else 128). With `schema_path`: uses it as is.
3. Validates the statistics against the schema; writes `anomalies.pbtxt` and returns the anomalies
   in plain words (feature: short description - long description).
4. With `compare_pattern` (e.g. train vs val; by default the val split of a dataset given by name
   when it has images): computes its statistics too, validates them against
   the same schema (reported as anomalies, prefixed "compare:") and checks drift between the two
   (L-infinity distance of `image/format` frequencies, Jensen-Shannon divergence of height and
   width histograms). Drift is reported separately (`ValidationResult.drift`) and does not make
   the data invalid: a small val split legitimately differs from train.
5. Writes `stats.html`, a self-contained table of the statistics (opens offline), and
   `stats_facets.html`, TFDV's Facets view (needs internet access in the browser).

Files in `out_dir`: stats.tfrecord (+ compare_stats.tfrecord), schema.pbtxt (when inferred),
anomalies.pbtxt (+ drift_anomalies.pbtxt), stats.html, stats_facets.html.
"""

from __future__ import annotations

import dataclasses
import html
import os
from typing import Iterable, Sequence

import tensorflow as tf
import tensorflow_data_validation as tfdv
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_data_validation import types as tfdv_types
from tensorflow_data_validation.statistics.generators import image_stats_generator
from tensorflow_data_validation.utils import display_util
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from glcic_tf.data.schema import (
    FEATURE_CHANNELS,
    FEATURE_ENCODED,
    FEATURE_FORMAT,
    FEATURE_HEIGHT,
    FEATURE_KEY,
    FEATURE_WIDTH,
)

ALL_FEATURES = (FEATURE_ENCODED, FEATURE_FORMAT, FEATURE_HEIGHT, FEATURE_WIDTH, FEATURE_CHANNELS,
                FEATURE_KEY)
FORMATS = ("jpeg", "png")
# Drift thresholds between the data and the comparison data.
FORMAT_LINF_THRESHOLD = 0.25
SIZE_JS_THRESHOLD = 0.3

STATS_NAME = "stats.tfrecord"
COMPARE_STATS_NAME = "compare_stats.tfrecord"
SCHEMA_NAME = "schema.pbtxt"
ANOMALIES_NAME = "anomalies.pbtxt"
DRIFT_ANOMALIES_NAME = "drift_anomalies.pbtxt"
HTML_NAME = "stats.html"
FACETS_HTML_NAME = "stats_facets.html"


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """Outcome of `validate`.

    Attributes:
      ok: True when neither the data nor the comparison data has anomalies (drift aside).
      anomalies: one plain-words line per anomaly ("feature: short - long").
      drift: one line per drift anomaly between data and comparison data (not part of `ok`).
      schema_path: the schema used (inferred and written, or the one given).
      schema_inferred: whether `schema_path` was inferred by this call.
      stats_path: statistics of the data (TFRecord of a DatasetFeatureStatisticsList).
      html_path: self-contained HTML table of the statistics.
      anomalies_path: text-format Anomalies proto of the data.
      compare_stats_path: statistics of the comparison data, if any.
      compared_with: what the comparison data was (the `compare_pattern`, or the dataset's val
        split), None without comparison.
      files: the shards validated.
    """

    ok: bool
    anomalies: list[str]
    drift: list[str]
    schema_path: str
    schema_inferred: bool
    stats_path: str
    html_path: str
    anomalies_path: str
    compare_stats_path: str | None = None
    compared_with: str | None = None
    files: tuple[str, ...] = ()


class EncodedImageStatsGenerator(image_stats_generator.ImageStatsGenerator):
    """TFDV's ImageStatsGenerator for one feature only (`image/encoded` by default).

    With `values_threshold=1, is_image_ratio_threshold=0` it reports a format histogram however
    few values there are and however many are broken, so the schema's image domain can reject
    them. Other features accumulate nothing and therefore get no image statistics.
    """

    def __init__(self, feature: str = FEATURE_ENCODED, **kwargs):
        kwargs.setdefault("values_threshold", 1)
        kwargs.setdefault("is_image_ratio_threshold", 0.0)
        super().__init__(name="EncodedImageStatsGenerator", **kwargs)
        self._feature = tfdv_types.FeaturePath([feature])

    def add_input(self, accumulator, feature_path, feature_array):
        if feature_path != self._feature:
            return accumulator
        return super().add_input(accumulator, feature_path, feature_array)


def stats_options(schema=None):
    """The `tfdv.StatsOptions` used for all statistics here."""
    return tfdv.StatsOptions(schema=schema, generators=[EncodedImageStatsGenerator()],
                             num_top_values=10, num_rank_histogram_buckets=20)


def compute_statistics(data: str | Sequence[str], stats_path: str,
                       pipeline_args: Iterable[str] = ()):
    """Statistics of TFRecord shards (a glob or a list of files, each checked to be a shard of
    our schema), also written to `stats_path`."""
    from glcic_tf.data import shards

    files = shards.list_files(data)
    return tfdv.generate_statistics_from_tfrecord(
        data_location=files, output_path=stats_path, stats_options=stats_options(),
        pipeline_options=PipelineOptions(list(pipeline_args)))


def tighten_schema(schema, min_side: int):
    """Adds the `glcic_tf.data.schema` contract to an inferred schema (in place; also returned)."""
    features = {f.name: f for f in schema.feature}
    missing = [name for name in ALL_FEATURES if name not in features]
    if missing:
        raise ValueError(f"cannot build a schema: the statistics have no feature(s) {missing}; "
                         f"expected all of {list(ALL_FEATURES)}")
    for name in ALL_FEATURES:
        f = features[name]
        f.presence.min_fraction = 1.0
        f.presence.min_count = 1
        f.ClearField("shape")
        f.value_count.min = 1
        f.value_count.max = 1
        f.ClearField("domain")
        f.ClearField("string_domain")
    # Inferred top-level string domains (e.g. one named "image/format") are replaced below.
    del schema.string_domain[:]
    tfdv.get_feature(schema, FEATURE_CHANNELS).int_domain.CopyFrom(
        _int_domain(3, 3))
    for name in (FEATURE_HEIGHT, FEATURE_WIDTH):
        tfdv.get_feature(schema, name).int_domain.CopyFrom(_int_domain(min_side, None))
    tfdv.get_feature(schema, FEATURE_FORMAT).string_domain.value[:] = list(FORMATS)
    tfdv.get_feature(schema, FEATURE_ENCODED).image_domain.minimum_supported_image_fraction = 1.0
    return schema


def _int_domain(lo: int | None, hi: int | None):
    d = schema_pb2.IntDomain()
    if lo is not None:
        d.min = lo
    if hi is not None:
        d.max = hi
    return d


def describe_anomalies(anomalies, prefix: str = "") -> list[str]:
    """An Anomalies proto as plain-words lines: "feature: short description - description"."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        lines.append(f"{prefix}{feature}: {info.short_description} - {info.description}")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"{prefix}(dataset): {info.short_description} - {info.description}")
    return lines


def _drift_schema(schema):
    drift = schema_pb2.Schema()
    drift.CopyFrom(schema)
    for f in drift.feature:
        if f.name == FEATURE_FORMAT:
            f.drift_comparator.infinity_norm.threshold = FORMAT_LINF_THRESHOLD
        elif f.name in (FEATURE_HEIGHT, FEATURE_WIDTH):
            f.drift_comparator.jensen_shannon_divergence.threshold = SIZE_JS_THRESHOLD
    return drift


def statistics_html(stats, title: str = "TFDV statistics") -> str:
    """A self-contained HTML page with one table per dataset of a DatasetFeatureStatisticsList."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:3px 8px;text-align:right}"
             "td:first-child{text-align:left}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for ds in stats.datasets:
        parts.append(f"<h2>{html.escape(ds.name or 'dataset')}: {ds.num_examples} examples</h2>")
        parts.append("<table><tr><th>feature</th><th>type</th><th>missing</th>"
                     "<th>values/example</th><th>min</th><th>mean</th><th>max</th>"
                     "<th>unique</th><th>top values / image formats</th></tr>")
        for f in ds.features:
            name = ".".join(f.path.step) or f.name
            ftype = statistics_pb2.FeatureNameStatistics.Type.Name(f.type)
            stats_kind = f.WhichOneof("stats")
            common = getattr(f, stats_kind).common_stats if stats_kind else None
            missing = common.num_missing if common else ""
            vpe = (f"{common.min_num_values}-{common.max_num_values}" if common else "")
            lo = mean = hi = unique = top = ""
            if stats_kind == "num_stats":
                lo, mean, hi = (f"{f.num_stats.min:g}", f"{f.num_stats.mean:.4g}",
                                f"{f.num_stats.max:g}")
            elif stats_kind == "string_stats":
                unique = f.string_stats.unique
                top = ", ".join(f"{v.value} ({v.frequency:g})"
                                for v in f.string_stats.top_values[:5])
            elif stats_kind == "bytes_stats":
                unique = f.bytes_stats.unique
                lo, mean, hi = (f"{f.bytes_stats.min_num_bytes:g} B",
                                f"{f.bytes_stats.avg_num_bytes:.4g} B",
                                f"{f.bytes_stats.max_num_bytes:g} B")
            for custom in f.custom_stats:
                if custom.name == "image_format_histogram":
                    top = ", ".join(f"{b.label} ({b.sample_count:g})"
                                    for b in custom.rank_histogram.buckets)
            cells = [name, ftype, missing, vpe, lo, mean, hi, unique, top]
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                         + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_text(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def validate(data_pattern: str | Sequence[str], out_dir: str, *,
             schema_path: str | None = None, min_side: int | None = None,
             compare_pattern: str | Sequence[str] | None = None, compare: bool = True,
             pipeline_args: Sequence[str] = ()) -> ValidationResult:
    """Statistics, schema (inferred or given), anomalies and drift for TFRecord shards.

    Args:
      data_pattern: the shards to validate: a dataset (prefix, metadata file; its train split)
        or globs / files (`glcic_tf.data.selections.select`).
      out_dir: where statistics, schema, anomalies and HTML reports are written.
      schema_path: an existing `schema.pbtxt` to validate against; None infers and writes one.
      min_side: smallest allowed height/width in an inferred schema (default: the dataset's
        `min_side`, else 128).
      compare_pattern: a second dataset or globs (a dataset gives its val split) validated
        against the same schema and checked for drift against `data_pattern`.
      compare: without `compare_pattern`, compare with the val split of the dataset(s) given
        by name in `data_pattern` (when they have val images).
      pipeline_args: Beam pipeline options for the statistics pipelines.

    Returns:
      A `ValidationResult`.
    """
    from glcic_tf.data import selections

    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    if schema_path is not None and not tf.io.gfile.exists(schema_path):
        raise FileNotFoundError(f"--schema {schema_path!r} does not exist")
    selection = selections.select(data_pattern, "train")
    data_name = selection.spec
    compared = None
    if compare_pattern is not None:
        compared = selections.select(compare_pattern, "val")
    elif compare:
        compared = selection.val_selection()
    if min_side is None:
        sides = {d.info.get("min_side") for d in selection.datasets} - {None}
        min_side = min(sides) if sides else 128
    tf.io.gfile.makedirs(out_dir)
    stats_path = os.path.join(out_dir, STATS_NAME)
    stats = compute_statistics(list(selection.files), stats_path, pipeline_args)

    inferred = schema_path is None
    if inferred:
        schema = tighten_schema(tfdv.infer_schema(stats, infer_feature_shape=False), min_side)
        schema_path = os.path.join(out_dir, SCHEMA_NAME)
        tfdv.write_schema_text(schema, schema_path)
    else:
        schema = tfdv.load_schema_text(schema_path)

    anomalies = tfdv.validate_statistics(stats, schema)
    anomalies_path = os.path.join(out_dir, ANOMALIES_NAME)
    tfdv.write_anomalies_text(anomalies, anomalies_path)
    lines = describe_anomalies(anomalies)

    drift_lines: list[str] = []
    compare_stats_path = None
    compare_stats = None
    if compared is not None:
        compare_stats_path = os.path.join(out_dir, COMPARE_STATS_NAME)
        compare_stats = compute_statistics(list(compared.files), compare_stats_path,
                                           pipeline_args)
        lines += describe_anomalies(tfdv.validate_statistics(compare_stats, schema),
                                    prefix="compare: ")
        drift = tfdv.validate_statistics(stats, _drift_schema(schema),
                                         previous_statistics=compare_stats)
        # Keep only the comparator findings; schema anomalies are already reported above.
        drift_only = _only_comparator_anomalies(drift)
        tfdv.write_anomalies_text(drift_only, os.path.join(out_dir, DRIFT_ANOMALIES_NAME))
        drift_lines = describe_anomalies(drift_only, prefix="drift: ")

    html_path = os.path.join(out_dir, HTML_NAME)
    _write_text(html_path, statistics_html(
        _named(stats, data_name) if compare_stats is None else
        _merged(_named(stats, data_name), _named(compare_stats, compared.spec)),
        title=f"TFDV statistics: {data_name}"))
    try:
        _write_text(os.path.join(out_dir, FACETS_HTML_NAME),
                    display_util.get_statistics_html(stats, compare_stats, lhs_name="data",
                                                     rhs_name="compare"))
    except Exception:  # noqa: BLE001 - the Facets page is a convenience; the table is enough
        pass
    return ValidationResult(ok=not lines, anomalies=lines, drift=drift_lines,
                            schema_path=schema_path, schema_inferred=inferred,
                            stats_path=stats_path, html_path=html_path,
                            anomalies_path=anomalies_path, compare_stats_path=compare_stats_path,
                            compared_with=(None if compared is None else
                                           compared.spec + ("" if compare_pattern is not None
                                                            else " (val split)")),
                            files=selection.files)


def _only_comparator_anomalies(anomalies):
    kinds = {anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
             anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
             anomalies_pb2.AnomalyInfo.COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH}
    out = anomalies_pb2.Anomalies()
    out.CopyFrom(anomalies)
    out.ClearField("dataset_anomaly_info")
    for feature in list(out.anomaly_info):
        info = out.anomaly_info[feature]
        reasons = [r for r in info.reason if r.type in kinds]
        if not reasons:
            del out.anomaly_info[feature]
            continue
        del info.reason[:]
        info.reason.extend(reasons)
        info.short_description = reasons[0].short_description if len(reasons) == 1 else (
            "Multiple drift errors")
        info.description = " ".join(r.description for r in reasons)
    return out


def _named(stats, name: str):
    out = statistics_pb2.DatasetFeatureStatisticsList()
    out.CopyFrom(stats)
    for ds in out.datasets:
        ds.name = name
    return out


def _merged(a, b):
    out = statistics_pb2.DatasetFeatureStatisticsList()
    out.datasets.extend(list(a.datasets) + list(b.datasets))
    return out
