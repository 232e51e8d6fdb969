"""Import the authors' released Torch7 completion network into a glcic_tf run directory.

The .t7 files are not shipped or downloaded by glcic_tf; download them yourself from the authors'
project page (completionnet_places2.t7, completionnet_places2_freeform.t7,
completionnet_celeba.t7). The importer checks every layer against the paper's network, copies
the weights (Torch padding, Torch7 input convention, the file's mean pixel), verifies the Keras
network against a NumPy forward pass with Torch's semantics and writes config.json and a
checkpoint that export, completion and fine-tuning load like any training run.

Usage:
  python pipelines/import_torch7.py --t7 completionnet_places2.t7 --out runs/places2-torch7
  python pipelines/import_torch7.py --t7 completionnet_celeba.t7 --out runs/celeba-torch7 \
      --preset paper
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from glcic_tf import console


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("Usage:")[1].rstrip() if "Usage:" in __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t7", required=True,
                        help="the released Torch7 file, e.g. completionnet_places2.t7")
    parser.add_argument("--out", required=True,
                        help="new run directory to write (config.json, checkpoints/)")
    parser.add_argument("--preset", default="paper",
                        help="config preset the imported run starts from (default: paper)")
    parser.add_argument("--mean-pixel", type=float, nargs=3, metavar=("R", "G", "B"),
                        help="mean pixel in [0, 1]; only for files that store none (the released "
                             "files do)")
    parser.add_argument("--long-size", type=int, choices=(4, 8), default=8,
                        help="bytes of a C long where the file was written: 8 (Linux, macOS; "
                             "the released files) or 4 (Windows)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the comparison with the NumPy Torch reference")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if not os.path.isfile(args.t7) and "://" not in args.t7:
        parser.error(f"--t7: no such file: {args.t7}")
    return args


def main(args: argparse.Namespace) -> int:
    from glcic_tf.training import runs
    from glcic_tf.torch7 import importer as torch7
    from glcic_tf.config import GLCICConfig

    run_dir = torch7.import_torch7(args.t7, args.out, preset=args.preset,
                                   mean_pixel=args.mean_pixel, long_size=args.long_size,
                                   verify=not args.no_verify)
    with open(os.path.join(run_dir, torch7.IMPORT_INFO_NAME)) as f:
        info = json.load(f)
    config = GLCICConfig.load(runs.config_path(run_dir))
    print(f"imported {args.t7} (sha256 {info['sha256'][:12]}...) into {run_dir}")
    print(f"  {len(info['layers'])} convolution layers + 16 batch norms, "
          f"{info['parameters']:,} parameters, width {config.model.width:g}")
    for layer in info["layers"]:
        print(f"    {layer['name']:<18} {layer['kind']:<7} torch weight {layer['shape']}")
    print("  mean pixel (RGB): " + ", ".join(f"{v:.4f}" for v in config.data.mean_pixel))
    print(f"  config: padding={config.model.padding}, "
          f"input_convention={config.data.input_convention}, "
          f"batch_norm_epsilon={config.model.batch_norm_epsilon:g}")
    if info["max_abs_diff_vs_torch_reference"] is not None:
        print(f"  verified: max |keras - torch reference| = "
              f"{info['max_abs_diff_vs_torch_reference']:.2e}")
    print("next:")
    print(f"  python pipelines/complete.py --model {run_dir} --image photo.jpg --mask mask.png "
          "--out completed.png")
    print(f"  python pipelines/export.py --checkpoint {run_dir} --out models/glcic")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
