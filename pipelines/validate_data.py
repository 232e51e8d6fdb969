"""Validate TFRecord shards with TensorFlow Data Validation (statistics, schema, anomalies, drift).

First run (no --schema): infers schema.pbtxt from the data and tightens it to the glcic_tf
contract (six features, one value each, 3 channels, sides >= --min-side, format jpeg/png, every
image/encoded a decodable image). Later runs validate new data against that schema. With
--compare, the second dataset is validated too and train-vs-val drift is reported separately.
Details: `glcic_tf/data/validation.py`.

--data takes a dataset (its prefix DIR/NAME, or DIR/NAME-dataset_info.json): its train split
is validated and compared with its val split, and --min-side defaults to the dataset's own. Globs
of shards work too. A file that is not a TFRecord of our schema (say a JSON file caught by a
glob) is an error naming it.

Usage:
  # infer + validate the train split, compare with val (the dataset's own splits)
  python pipelines/validate_data.py --data /data/tfr/places2 --out /data/tfr/validation

  # the same with globs
  python pipelines/validate_data.py --data '/data/tfr/places2-train-*.tfrecord' \\
      --compare '/data/tfr/places2-val-*.tfrecord' --out /data/tfr/validation

  # validate a new batch against the saved schema
  python pipelines/validate_data.py --data '/data/tfr/new-train-*.tfrecord' \\
      --schema /data/tfr/validation/schema.pbtxt --out /tmp/new_validation

Writes into --out: stats.tfrecord, schema.pbtxt (when inferred), anomalies.pbtxt, stats.html
(open in a browser), stats_facets.html, and when comparing compare_stats.tfrecord and
drift_anomalies.pbtxt. Unknown flags are Beam pipeline options (e.g. --runner DataflowRunner).

Exit status: 0 when no anomalies were found, 1 when there are anomalies (printed), 2 for bad
arguments, missing files or files that are not TFRecord shards of our schema. Drift alone exits
0 unless --fail-on-drift is given.
"""

from __future__ import annotations

import argparse
import sys

from glcic_tf import console


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Parses the script's flags; unknown flags are returned as Beam pipeline options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, metavar="DATASET|GLOB",
                        help="a dataset (prefix DIR/NAME or its NAME-dataset_info.json; its "
                             "train split) or globs of TFRecord shards, comma-separated")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory for statistics, schema, anomalies and reports")
    parser.add_argument("--schema", default=None, metavar="SCHEMA_PBTXT",
                        help="validate against this schema instead of inferring one")
    parser.add_argument("--min-side", type=int, default=None,
                        help="smallest allowed image side in an inferred schema; default: the "
                             "dataset's min_side, else 128")
    parser.add_argument("--compare", default=None, metavar="DATASET|GLOB",
                        help="second data (a dataset's val split, or globs): validated against "
                             "the same schema and checked for drift against --data; default: "
                             "the val split of a dataset given in --data")
    parser.add_argument("--no-compare", dest="auto_compare", action="store_false",
                        help="do not compare a dataset's train split with its val split")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help="exit 1 on drift between --data and --compare too")
    console.add_verbose_flag(parser)
    args, beam_args = parser.parse_known_args(argv)
    if args.min_side is not None and args.min_side < 1:
        parser.error(f"--min-side must be >= 1, got {args.min_side}")
    return args, beam_args


def main(parsed: tuple[argparse.Namespace, list[str]]) -> int:
    args, beam_args = parsed
    from glcic_tf.data import validation

    try:
        result = validation.validate(args.data, args.out, schema_path=args.schema,
                                     min_side=args.min_side, compare_pattern=args.compare,
                                     compare=args.auto_compare, pipeline_args=beam_args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"schema: {result.schema_path}" + (" (inferred)" if result.schema_inferred else ""))
    print(f"statistics: {result.stats_path}\nreport: {result.html_path}")
    if result.anomalies:
        print(f"{len(result.anomalies)} anomalies (details in {result.anomalies_path}):")
        for line in result.anomalies:
            print(f"  {line}")
    else:
        print("no anomalies")
    if result.compared_with is not None:
        if result.drift:
            print(f"{len(result.drift)} drift findings between --data and "
                  f"{result.compared_with}:")
            for line in result.drift:
                print(f"  {line}")
        else:
            print(f"no drift between --data and {result.compared_with}")
    if not result.ok:
        return 1
    if args.fail_on_drift and result.drift:
        print(f"error: drift between --data and {result.compared_with} (--fail-on-drift); see "
              f"the findings above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
