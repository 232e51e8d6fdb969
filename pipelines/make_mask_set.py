"""Pack mask images (white = hole) into one TFRecord file of `mask/encoded` records, or check a
mask set, for `masks.mask_files` / `--mask-files` (library: `glcic_tf.data.mask_sets`).

A mask TFRecord reads faster than thousands of small files and travels as one object. With
--check only, every mask of a set (images or TFRecords) is decoded and the bad ones listed.

Usage:
  python pipelines/make_mask_set.py --masks 'masks/*.png' --output masks.tfrecord
  python pipelines/make_mask_set.py --masks masks.tfrecord --check

Exit status: 0 done (or no bad mask), 1 bad masks or a glob/file that cannot be read, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import sys

from glcic_tf import console


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--masks", required=True, help="glob of mask images (or, with --check, of "
                   "mask TFRecords)")
    p.add_argument("--output", help="TFRecord file to write")
    p.add_argument("--check", action="store_true", help="only decode and report bad masks")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if not args.check and not args.output:
        p.error("give --output (or --check)")
    return args


def main(args: argparse.Namespace) -> int:
    from glcic_tf.data import mask_sets

    try:
        if args.check:
            bad = mask_sets.find_bad_masks(args.masks)
            for name, problem in bad:
                print(f"{name}: {problem}")
            print(f"{len(bad)} bad mask(s)")
            return 1 if bad else 0
        count = mask_sets.write_mask_tfrecords(args.masks, args.output)
    except (ValueError, FileNotFoundError) as e:
        print(f"mask_sets: {e}", file=sys.stderr)
        return 1
    print(f"wrote {count} masks to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
