"""Full-resolution completion of a large photo (`maxdim=0`): peak memory and time on CPU.

A 4000x3000 photo (synthetic: smooth gradients plus texture, written as PNG) with one square
hole is completed by `files.complete_files` (what `pipelines/complete.py` runs: read the
files, complete, post-process, write the PNG) with the full-width (width 1.0, the paper's)
completion network, random He-normal weights (`benchmarks.completion.he_normal_weights`; the
weights do not change memory or time). Each case runs in its own Python process, which reports
its own peak resident memory (VmHWM from /proc/self/status, and ru_maxrss), so the cases do not
inflate each other's peaks:

* `baseline`: TensorFlow started, the network built, the image and mask read; nothing completed.
* `hole300_maxdim0`: a 300x300 hole at full resolution: one ~608x608 network pass
  around the hole, post-processing on a crop. The target: peak < 4 GiB.
* `hole300_maxdim500`: the same with the default `maxdim=500` (whole image scaled down to
  500x375 and back up), for comparison.
* `hole1100_maxdim0` (not with --quick): a 1100x1100 hole, one pass of ~1408x1408 px, close to
  the default pixel budget (`regions.DEFAULT_REGION_PIXELS`): the most memory one pass takes
  with the defaults, since larger regions are tiled.

Times: `cold_s` is the first `complete_files` call (tracing included, what one CLI run pays
besides start-up), `warm_s` a second `Completer.complete` call on the same arrays (no I/O).
`--quick`: width 1/8, a 1000x750 photo with an 80x80 hole (a smoke run, not the figures).

Usage:
  python -m glcic_tf.benchmarks.large_image --json           # ~1-2 min on a 2-core CPU
  python -m glcic_tf.benchmarks.large_image --quick --json   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from glcic_tf import console

TARGET_PEAK_GIB = 4.0
_GIB = 1024.0 ** 3


def _peak_rss_bytes() -> dict:
    """This process's peak resident memory: VmHWM (/proc) and ru_maxrss (kB on Linux)."""
    peak = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak["vmhwm"] = int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    return peak


def _synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: smooth colour gradients, stripes and a little noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    out = np.empty((height, width, 3), np.uint8)
    for c, (fy, fx) in enumerate([(3.0, 5.0), (7.0, 2.0), (4.0, 9.0)]):
        channel = (0.5 + 0.25 * np.sin(2 * np.pi * fy * y + c) * np.cos(2 * np.pi * fx * x)
                   + 0.2 * (x + y - 1.0))
        channel = channel * 255.0 + rng.normal(0.0, 4.0, (height, width)).astype(np.float32)
        out[..., c] = np.clip(channel, 0, 255).astype(np.uint8)
    return out


def _write_inputs(folder: str, height: int, width: int, holes: dict) -> dict:
    """Writes photo.png and one mask per hole size (centred square); returns the paths."""
    from PIL import Image

    Image.fromarray(_synthetic_photo(height, width)).save(
        os.path.join(folder, "photo.png"), compress_level=1)
    paths = {"image": os.path.join(folder, "photo.png")}
    for name, side in holes.items():
        mask = np.zeros((height, width), np.uint8)
        top, left = (height - side) // 2, (width - side) // 2
        mask[top:top + side, left:left + side] = 255
        paths[name] = os.path.join(folder, f"mask_{name}.png")
        Image.fromarray(mask).save(paths[name])
    return paths


def _child(args: argparse.Namespace) -> dict:
    """One case in this process: build, complete, report peak memory and times."""
    import keras

    from glcic_tf.inference.completer import Completer
    from glcic_tf.inference.files import complete_files
    from glcic_tf.inference.images import HOLE_THRESHOLD, load_image, load_mask
    from glcic_tf.inference.regions import plan_regions
    from glcic_tf.networks import models
    from glcic_tf.benchmarks.completion import he_normal_weights
    from glcic_tf.config import get_preset

    start = time.perf_counter()
    config = get_preset("paper").override({"model.width": args.width})
    keras.utils.set_random_seed(0)
    model = models.completion_network(config.model.width, config.model)
    he_normal_weights(model, seed=0)
    completer = Completer.from_model(config, model)
    build_s = time.perf_counter() - start
    result = {"case": args.case, "width": args.width, "maxdim": args.maxdim,
              "build_s": round(build_s, 2)}
    if args.case == "baseline":
        image = load_image(args.image)
        mask = load_mask(args.mask)
        result["image_size"] = [int(image.shape[1]), int(image.shape[0])]
    else:
        out = os.path.join(os.path.dirname(args.image), f"out_{args.case}.png")
        start = time.perf_counter()
        complete_files(completer, args.image, args.mask, out, maxdim=args.maxdim)
        result["cold_s"] = round(time.perf_counter() - start, 2)
        image = load_image(args.image)
        mask = load_mask(args.mask)
        hole = mask >= HOLE_THRESHOLD
        if args.maxdim == 0:
            regions = plan_regions(hole)
            result["network_inputs"] = [list(t.input_size) for r in regions for t in r.tiles]
        start = time.perf_counter()
        completed = completer.complete(image, mask, maxdim=args.maxdim)
        result["warm_s"] = round(time.perf_counter() - start, 2)
        result["outside_hole_unchanged"] = bool(np.array_equal(completed[~hole], image[~hole]))
        result["image_size"] = [int(image.shape[1]), int(image.shape[0])]
        result["hole_pixels"] = int(hole.sum())
    peak = _peak_rss_bytes()
    result["peak_rss_gib"] = round(peak.get("vmhwm", peak["ru_maxrss"]) / _GIB, 3)
    result["ru_maxrss_gib"] = round(peak["ru_maxrss"] / _GIB, 3)
    return result


def _run_case(case: str, image: str, mask: str, width: float, maxdim: int) -> dict:
    cmd = [sys.executable, "-m", "glcic_tf.benchmarks.large_image", "--child", case,
           "--image", image, "--mask", mask, "--width", repr(width), "--maxdim", str(maxdim)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    """Runs every case in its own process and returns the figures (see the module docstring).

    Args:
      quick: width 1/8, 1000x750 px, an 80x80 hole: a smoke run, not the real figures.
    """
    width = 0.125 if quick else 1.0
    height, image_width = (750, 1000) if quick else (3000, 4000)
    holes = {"hole300": 80 if quick else 300}
    if not quick:
        holes["hole1100"] = 1100
    cases = [("baseline", "hole300", 0), ("hole300_maxdim0", "hole300", 0),
             ("hole300_maxdim500", "hole300", 500)]
    if not quick:
        cases.append(("hole1100_maxdim0", "hole1100", 0))
    result: dict = {
        "benchmark": "large_image",
        "quick": quick,
        "width": width,
        "image_size": [image_width, height],
        "hole_sides": holes,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "memory": "peak resident set size (VmHWM) of a fresh process per case",
        "cases": {},
    }
    folder = tempfile.mkdtemp(prefix="glcic-large-")
    try:
        paths = _write_inputs(folder, height, image_width, holes)
        for case, hole_name, maxdim in cases:
            result["cases"][case] = _run_case(case, paths["image"], paths[hole_name], width,
                                              maxdim)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    main_case = result["cases"]["hole300_maxdim0"]
    result["target_peak_lt_4_gib"] = bool(main_case["peak_rss_gib"] < TARGET_PEAK_GIB)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (not figures)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON (the default output; kept for symmetry "
                             "with the other benchmarks' command lines)")
    # Internal: one case in this process (run() starts these).
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mask", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--maxdim", type=int, default=0, help=argparse.SUPPRESS)
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    if args.child:
        args.case = args.child
        print(json.dumps(_child(args)))
        return 0
    print(json.dumps(run(quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
