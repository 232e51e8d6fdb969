"""Embedded REST server compatible with TensorFlow Serving, for glcic_tf SavedModels.

Flags follow tensorflow_model_server where they exist. Serves the highest version under
--model_base_path and picks up new versions dropped there (polled every
--file_system_poll_wait_seconds). REST only; for gRPC, batching and production use run the
tensorflow/serving container (serving/README.md).

Usage:
  python serving/server.py --model_name glcic --model_base_path /abs/path/to/export/glcic
  python serving/server.py --rest_api_port 8501 --model_config_file serving/models.config
  curl http://127.0.0.1:8501/v1/models/glcic
  python serving/server.py --model_name glcic --model_base_path models/glcic_photos128 --inbrowser

The completion page (paint over what should go, get it filled, download the PNG) is at
http://127.0.0.1:8501/ui unless --no-ui is given; it calls the same REST API as any client.
"""

from __future__ import annotations

import argparse
import os
import sys

from glcic_tf import console
from glcic_tf.serving.app import DEFAULT_MAX_BODY_BYTES
from glcic_tf.serving.model_config import ModelConfig, parse_model_config_file
from glcic_tf.serving.server import ServerOptions, serve


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rest_api_port", type=int, default=8501,
                   help="port of the REST API (default: %(default)s)")
    p.add_argument("--rest_api_host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the server to the network "
                        "(default: %(default)s)")
    p.add_argument("--model_name", default="default",
                   help="name of the model in URLs, /v1/models/NAME (default: %(default)s, as "
                        "tensorflow_model_server)")
    p.add_argument("--model_base_path", default="",
                   help="directory with integer version subdirectories (BASE/1/saved_model.pb)")
    p.add_argument("--model_config_file", default="",
                   help="ModelServerConfig text proto (serving/models.config) instead of "
                        "--model_name/--model_base_path; several models, version policies and "
                        "labels")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between scans of the base paths for new versions; 0 scans "
                        "once at start (default: %(default)s)")
    p.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="larger request bodies are answered with 413 (default: %(default)s)")
    p.add_argument("--num_threads", "--rest_api_num_threads", dest="num_threads", type=int,
                   default=max(4, os.cpu_count() or 1),
                   help="threads running predictions concurrently (default: %(default)s)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30_000,
                   help="predictions not answered in time get 504; 0 disables "
                        "(default: %(default)s)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="TensorFlow intra-op threads (0: TensorFlow decides)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="TensorFlow inter-op threads (0: TensorFlow decides)")
    p.add_argument("--log_level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access_log", action="store_true", help="log every request")
    p.add_argument("--ui", action=argparse.BooleanOptionalAction, default=True,
                   help="serve the completion page at http://HOST:PORT/ui (paint a hole, get "
                        "it filled; it uses the REST API like any client) (default: on)")
    p.add_argument("--inbrowser", action="store_true",
                   help="open the completion page in the default web browser once the server "
                        "is up")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)

    if bool(args.model_base_path) == bool(args.model_config_file):
        p.error("give exactly one of --model_base_path and --model_config_file")
    if args.inbrowser and not args.ui:
        p.error("--inbrowser opens the completion page, which --no-ui turns off")
    if not 0 <= args.rest_api_port < 65536:
        p.error(f"--rest_api_port must be in [0, 65535], got {args.rest_api_port}")
    if args.file_system_poll_wait_seconds < 0:
        p.error("--file_system_poll_wait_seconds must be >= 0, got "
                f"{args.file_system_poll_wait_seconds}")
    if args.max_body_bytes < 1:
        p.error(f"--max_body_bytes must be >= 1, got {args.max_body_bytes}")
    if args.num_threads < 1:
        p.error(f"--num_threads must be >= 1, got {args.num_threads}")
    if args.rest_api_timeout_in_ms < 0:
        p.error(f"--rest_api_timeout_in_ms must be >= 0, got {args.rest_api_timeout_in_ms}")
    if args.model_config_file and not os.path.isfile(args.model_config_file):
        p.error(f"--model_config_file {args.model_config_file}: no such file")
    return args


def main(args: argparse.Namespace) -> None:
    try:
        if args.model_config_file:
            models = parse_model_config_file(args.model_config_file)
        else:
            models = [ModelConfig(args.model_name, os.path.abspath(args.model_base_path))]
    except ValueError as e:
        sys.exit(f"error: {e}")
    options = ServerOptions(
        models=tuple(models),
        rest_api_port=args.rest_api_port,
        rest_api_host=args.rest_api_host,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_body_bytes=args.max_body_bytes,
        num_threads=args.num_threads,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        log_level=args.log_level,
        access_log=args.access_log,
        ui=args.ui,
        inbrowser=args.inbrowser,
    )
    try:
        serve(options)
    except OSError as e:  # the port is taken or the address is not ours
        sys.exit(f"error: {e.strerror or e}")


if __name__ == "__main__":
    main(console.parse_quietly(parse_args))
