r"""Complete images with a trained completion network (and the paper's post-processing).

MODEL is a training run directory, a SavedModel directory (its `complete` signature is used) or
a TF Serving base path (its highest integer version). White in the mask (>= 0.2) is the hole;
gray, RGB and RGBA masks are accepted. Images of any size; the long side is scaled down to
--maxdim for the network and the result is written at the input's size, with the input's own
pixels outside the hole. Without --mask, 2-4 random rectangles (sides 32-128 px) are drawn from
--seed, as the official tool does, and the mask used is written beside the output.

Usage:
  python pipelines/complete.py --model runs/demo --image in.jpg --mask mask.png --out out.png
  python pipelines/complete.py --model models/glcic --image photos/ --mask masks/ --out done/
  python pipelines/complete.py --model models/glcic/3 --image in.png --out out.png --seed 7
  python pipelines/complete.py --model runs/demo --image in.png --mask m.png --out o.png \
      --maxdim 800 --no-postprocess
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("MODEL is"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="training run dir, SavedModel dir or TF Serving base path")
    parser.add_argument("--image", required=True, metavar="IN",
                        help="image file, or a folder of images")
    parser.add_argument("--mask", default=None, metavar="MASK",
                        help="mask file, or a folder of masks matched by file name without "
                             "extension (default: random holes)")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="output image file, or a folder for a folder of images")
    parser.add_argument("--maxdim", type=int, default=500,
                        help="long side the network sees at most (default: 500)")
    parser.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                        help="skip fast marching + Poisson blending")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random holes when no --mask is given (default: 0)")
    args = parser.parse_args(argv)
    if args.maxdim < 4:
        parser.error(f"--maxdim must be >= 4, got {args.maxdim}")
    return args


def main(args: argparse.Namespace) -> int:
    from glcic_tf import completion
    from glcic_tf.config import ConfigError

    try:
        completer = completion.Completer.from_path(args.model)
        written = completion.complete_files(
            completer, args.image, args.mask, args.out, maxdim=args.maxdim,
            postprocess=args.postprocess, seed=args.seed)
    except (completion.CompletionError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
