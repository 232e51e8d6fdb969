"""Calibration: the machine's measured matmul peak (GFLOP/s), float32 and bfloat16 (+ float16
on GPU), so the other benchmarks can say how close to the limit each path runs.

A square N x N x N `tf.matmul` (2 N^3 FLOP) inside a tf.function that returns only a scalar
(the sum of the product, N^2 extra additions: negligible), timed `runs` times after a warm-up;
each dtype reports the median GFLOP/s with min and max. The peak (`peak_gflop_per_s`, what the
other benchmarks compare with) is the best run: other processes on a shared machine only ever
slow a run down, so the fastest one is the closest to what the hardware can do. bfloat16 on a
CPU without AVX512_BF16 / AMX is emulated and slow: it is still measured, and `bf16_native` says
which case it is.

Measured peaks per machine are in docs/training_speed.md (the benchmark JSONs beside it).

Usage:
  python -m glcic_tf.benchmarks.calibration            # N = 4096, 7 runs per dtype (~20 s)
  python -m glcic_tf.benchmarks.calibration --quick    # N = 1024, 3 runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Sequence

from glcic_tf import console


def matmul_gflops(n: int, dtype: str, runs: int, device: str | None = None) -> dict:
    """Median / min / max GFLOP/s of an n x n x n matmul in `dtype` (after one warm-up)."""
    import tensorflow as tf

    device = device or "/CPU:0"
    with tf.device(device):
        a = tf.cast(tf.random.stateless_uniform([n, n], [1, 2], -1.0, 1.0), dtype)
        b = tf.cast(tf.random.stateless_uniform([n, n], [3, 4], -1.0, 1.0), dtype)

        @tf.function
        def step(x, y):
            return tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32))

        step(a, b).numpy()  # trace, allocate, warm caches
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_start, wall_start = usage.ru_utime + usage.ru_stime, time.perf_counter()
        rates = []
        for _ in range(runs):
            start = time.perf_counter()
            step(a, b).numpy()
            rates.append(2.0 * n ** 3 / (time.perf_counter() - start) / 1e9)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cores_used = (usage.ru_utime + usage.ru_stime - cpu_start) / (time.perf_counter()
                                                                  - wall_start)
    return {"n": n, "dtype": dtype, "device": device, "runs": runs,
            "cores_used": round(cores_used, 2),
            "gflop_per_s_median": round(statistics.median(rates), 1),
            "gflop_per_s_min": round(min(rates), 1),
            "gflop_per_s_max": round(max(rates), 1)}


def run(quick: bool = False) -> dict:
    """Measures the matmul peak per dtype on the CPU (and the first GPU, if any)."""
    import tensorflow as tf

    from glcic_tf.benchmarks import machine

    n, runs = (1024, 3) if quick else (4096, 7)
    load_start = os.getloadavg()[0]
    cpu = {dtype: matmul_gflops(n, dtype, runs) for dtype in ("float32", "bfloat16")}
    result = {
        "benchmark": "calibration",
        "quick": quick,
        "what": f"tf.matmul {n}x{n}x{n}, median of {runs} runs after a warm-up",
        "bf16_native": machine.has_bf16(),
        "cpu": cpu,
        "peak_gflop_per_s": {"cpu_float32": cpu["float32"]["gflop_per_s_max"],
                             "cpu_bfloat16": cpu["bfloat16"]["gflop_per_s_max"]},
        "peak_is": "the best of the runs (load from other processes only slows runs down)",
    }
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        gn = 2048 if quick else 8192
        gpu = {dtype: matmul_gflops(gn, dtype, runs, gpus[0].name)
               for dtype in ("float32", "float16", "bfloat16")}
        result["gpu"] = gpu
        for dtype, entry in gpu.items():
            result["peak_gflop_per_s"][f"gpu_{dtype}"] = entry["gflop_per_s_max"]
    result["cpus"] = os.cpu_count()
    result["load_average_1m_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 1024, 3 runs")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    print(json.dumps(run(quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
