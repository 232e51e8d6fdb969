"""Completes an image with a served GLCIC model (TF Serving REST or gRPC, or the embedded server).

The mask is an image of the same size, white (>= 20% gray) where pixels are missing.

Usage:
  # REST, row format (instances)
  python serving/client.py --url http://localhost:8501 --model glcic \
      --image in.png --mask mask.png --out out.png
  # REST, columnar format (inputs)
  python serving/client.py --url http://localhost:8501 --model glcic \
      --image in.png --mask mask.png --out out.png --format columns
  # gRPC (tensorflow/serving only: the embedded server is REST only)
  python serving/client.py --grpc localhost:8500 --model glcic \
      --image in.png --mask mask.png --out out.png
  # model status and signatures
  python serving/client.py --url http://localhost:8501 --model glcic --status --metadata
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from glcic_tf import console
from glcic_tf.serving import client as serving_client


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://localhost:8501",
                   help="REST root of the server (default: %(default)s)")
    p.add_argument("--grpc", default="",
                   help="host:port of TF Serving's gRPC API; when given, predictions and "
                        "--status use gRPC instead of REST")
    p.add_argument("--model", default="glcic", help="model name (default: %(default)s)")
    p.add_argument("--version", type=int, default=None,
                   help="model version (default: the latest)")
    p.add_argument("--image", help="image to complete (PNG/JPEG/BMP/GIF)")
    p.add_argument("--mask", help="mask image of the same size, white = hole")
    p.add_argument("--out", help="where to write the completed PNG")
    p.add_argument("--format", choices=serving_client.FORMATS, default="rows",
                   help="REST request format: rows (instances) or columns (inputs)")
    p.add_argument("--status", action="store_true", help="print the model status")
    p.add_argument("--metadata", action="store_true",
                   help="print the model's signatures (REST)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds per request (default: %(default)s)")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)

    completing = any((args.image, args.mask, args.out))
    if completing and not all((args.image, args.mask, args.out)):
        p.error("--image, --mask and --out go together")
    if not completing and not (args.status or args.metadata):
        p.error("nothing to do: give --image/--mask/--out, --status or --metadata")
    for flag in ("image", "mask"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            p.error(f"--{flag} {path}: no such file")
    if args.version is not None and args.version < 0:
        p.error(f"--version must be >= 0, got {args.version}")
    return args


def main(args: argparse.Namespace) -> None:
    rest = serving_client.RestClient(args.url, args.model, version=args.version,
                                     timeout=args.timeout)
    grpc = (serving_client.GrpcClient(args.grpc, args.model, version=args.version,
                                      timeout=args.timeout) if args.grpc else None)
    try:
        if args.status:
            status = grpc.status() if grpc else rest.status()
            print(json.dumps(status, indent=1))
        if args.metadata:
            sigs = rest.metadata()["metadata"]["signature_def"]["signature_def"]
            print(json.dumps({name: {"inputs": {k: [v["dtype"], v["tensor_shape"]]
                                                for k, v in sig.get("inputs", {}).items()},
                                     "outputs": {k: [v["dtype"], v["tensor_shape"]]
                                                 for k, v in sig.get("outputs", {}).items()}}
                              for name, sig in sigs.items()}, indent=1))
        if args.image:
            with open(args.image, "rb") as f:
                image = f.read()
            with open(args.mask, "rb") as f:
                mask = f.read()
            png = grpc.complete(image, mask) if grpc else rest.complete(image, mask,
                                                                        args.format)
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "wb") as f:
                f.write(png)
            print(f"wrote {args.out} ({len(png)} bytes)")
    except serving_client.ServingError as e:
        sys.exit(f"error: the server answered {e.status}: {e.message}")
    finally:
        rest.close()
        if grpc:
            grpc.close()


if __name__ == "__main__":
    main(console.parse_quietly(parse_args))
