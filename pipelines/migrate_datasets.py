"""Move a folder of datasets from the old layout (one dataset_info.json) to one metadata file each.

Before, make_tfrecords.py wrote DIR/dataset_info.json for every prefix in DIR, so a second
dataset in the same folder replaced the first one's metadata. Now each dataset has
DIR/NAME-dataset_info.json. This command renames the old file after the dataset it describes
(its "name"), with shard names relative to it; with --recompute it also rebuilds, from the
shards themselves (one decoding pass: counts, exact train mean pixel, sizes), the metadata of
every other prefix in DIR whose metadata was lost. Old-layout datasets still load without this;
migrating makes every prefix usable as --data and stops a stale mean pixel being used.

Usage:
  python pipelines/migrate_datasets.py shards/                 # rename dataset_info.json
  python pipelines/migrate_datasets.py shards/ --recompute     # and rebuild lost metadata
  python pipelines/migrate_datasets.py gs://bucket/tfr --dry-run

Exit status: 0 done (or nothing to do), 2 bad arguments or a folder it cannot migrate.
"""

from __future__ import annotations

import argparse
import sys

from glcic_tf import console


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="folder holding the shards (local or gs://...)")
    parser.add_argument("--recompute", action="store_true",
                        help="rebuild the metadata of shard prefixes that have none by reading "
                             "their shards")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be done, change nothing")
    console.add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    from glcic_tf.data import datasets
    from glcic_tf.data import migration

    try:
        actions = migration.migrate(args.folder, recompute=args.recompute, dry_run=args.dry_run)
    except (FileNotFoundError, datasets.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in actions or [f"{args.folder}: nothing to migrate"]:
        print(("would: " if args.dry_run and actions else "") + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
