r"""Complete images with a trained completion network (and the paper's post-processing).

MODEL is a training run directory, a SavedModel directory (its `complete` signature is used) or
a TF Serving base path (its highest integer version). White in the mask (>= 0.2) is the hole;
gray, RGB and RGBA masks are accepted. Images of any size; the long side is scaled down to
--maxdim for the network and the result is written at the input's size, with the input's own
pixels outside the hole. --maxdim 0 keeps full resolution: only crops around the holes (with
153 px of context, the reach of the network's receptive field) go through the network, tiled
when a region exceeds --max-region-pixels, so memory depends on the holes, not on the image.
Without --mask, 2-4 random rectangles (sides 32-128 px) are drawn from --seed, as the official
tool does, and the mask used is written beside the output.

--postprocess picks the paper's post-processing: opencv (default: Telea's fast marching, then
cv2.seamlessClone per hole), in-graph (the same job in TensorFlow ops: exactly the picture a
SavedModel exported with in-graph post-processing serves through TF Serving) or none.

--precision bfloat16 computes a run directory's network in bfloat16 (batch norm folded, the
first conv, conv2 and the last two convs kept in float32: about half the float32 latency on a
CPU with AVX512_BF16 / AMX, > 40 dB PSNR against float32; see glcic_tf.networks.folding and
docs/inference.md). A SavedModel computes in the precision it was exported with
(pipelines/export.py --precision); asking it for another precision is an error, and the default
(no --precision) takes the export's.

Usage:
  # The shipped model (models/glcic_photos128), a mask painted white where the hole is.
  python pipelines/complete.py --image in.jpg --mask mask.png --out out.png
  python pipelines/complete.py --model runs/demo --image in.jpg --mask mask.png --out out.png
  python pipelines/complete.py --model models/glcic --image photos/ --mask masks/ --out done/
  python pipelines/complete.py --model models/glcic/3 --image in.png --out out.png --seed 7
  python pipelines/complete.py --model runs/demo --image in.png --mask m.png --out o.png \
      --maxdim 800 --postprocess none
  python pipelines/complete.py --image in.jpg --mask mask.png --out served.png \
      --postprocess in-graph
  python pipelines/complete.py --model models/glcic --image 4000x3000.jpg --mask m.png \
      --out full.png --maxdim 0
  python pipelines/complete.py --model runs/demo --image in.png --mask m.png --out o.png \
      --precision bfloat16
"""

from __future__ import annotations

import argparse
import sys

from glcic_tf import console


def parse_args(argv=None) -> argparse.Namespace:
    # numpy only; TensorFlow starts in main()
    from glcic_tf.inference import completer, postprocessing, regions
    from glcic_tf.inference.images import CompletionError

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("MODEL is"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="training run dir, SavedModel dir or TF Serving base path "
                             "(default: the shipped model, models/glcic_photos128)")
    parser.add_argument("--image", required=True, metavar="IN",
                        help="image file, or a folder of images")
    parser.add_argument("--mask", default=None, metavar="MASK",
                        help="mask file, or a folder of masks matched by file name without "
                             "extension (default: random holes)")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="output image file, or a folder for a folder of images")
    parser.add_argument("--maxdim", type=int, default=None,
                        help="long side the network sees at most (default: the model's, "
                             "which matches its training scale: 500 for the paper's 256 px "
                             "crops, 252 for the shipped 128 px model); 0 = full resolution, "
                             "completing crops around the holes")
    parser.add_argument("--context-margin", type=int, default=regions.CONTEXT_MARGIN,
                        metavar="PX",
                        help="with --maxdim 0: context pixels kept on each side of the holes "
                             "(default: %(default)s, the receptive field's reach; less is "
                             "faster but changes the result)")
    parser.add_argument("--max-region-pixels", type=int,
                        default=regions.DEFAULT_REGION_PIXELS, metavar="N",
                        help="with --maxdim 0: most pixels of one network pass; larger regions "
                             "are tiled (default: %(default)s, about 2 GiB at full width on "
                             "CPU)")
    parser.add_argument("--postprocess", choices=postprocessing.POSTPROCESS_MODES,
                        default="opencv",
                        help="opencv: fast marching + Poisson blending with OpenCV (the "
                             "paper's); in-graph: the same in TensorFlow ops, what an export "
                             "with in-graph post-processing serves; none (default: opencv)")
    parser.add_argument("--no-postprocess", dest="postprocess", action="store_const",
                        const="none", help="the same as --postprocess none")
    parser.add_argument("--precision", choices=completer.PRECISIONS, default=None,
                        help="compute precision of a training run's network (default: "
                             "float32); a SavedModel's is fixed at export (default: the "
                             "export's; another one is an error)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random holes when no --mask is given (default: 0)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.maxdim is not None and args.maxdim != 0 and args.maxdim < 4:
        parser.error(f"--maxdim must be >= 4, or 0 for full resolution, got {args.maxdim}")
    try:
        regions.check_region_args(args.context_margin, args.max_region_pixels)
    except CompletionError as e:
        parser.error(f"--context-margin / --max-region-pixels: {e}")
    return args


def main(args: argparse.Namespace) -> int:
    from glcic_tf.config import ConfigError
    from glcic_tf.inference import shipped
    from glcic_tf.inference.completer import Completer
    from glcic_tf.inference.files import complete_files
    from glcic_tf.inference.images import CompletionError

    try:
        completer = Completer.from_path(args.model or shipped.model_path(),
                                        precision=args.precision)
        written = complete_files(
            completer, args.image, args.mask, args.out, maxdim=args.maxdim,
            postprocess=args.postprocess, seed=args.seed, context_margin=args.context_margin,
            max_region_pixels=args.max_region_pixels)
    except (CompletionError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
