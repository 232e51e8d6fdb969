"""Training memory: measured peak of phase-3 steps against `glcic_tf.training.memory.estimate`.

Each case runs in a fresh process (`--case SIZE,WIDTH,BATCH,PRECISION`): the paper preset at
that crop size, width and batch, built by `trainer.build_trainer`, one warm-up `fit()` step of
phase 3 (tracing included, as in training) and one more step, on an in-memory batch. The peak
resident memory (VmHWM) of that process is the measurement; the JSON puts it beside the
estimate and their ratio. The estimator's constants (`memory.ACTIVATION_BYTES`,
`memory.PARAMETER_COPIES`, `memory.RUNTIME_BYTES`) were fitted to the float32 cases by least
squares (`fit` in the output: refit when the ratios drift from 1).

Usage:
  python -m glcic_tf.benchmarks.train_memory           # 4 cases, ~4 min on a 2-core CPU
  python -m glcic_tf.benchmarks.train_memory --quick   # 2 small cases
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from glcic_tf import console

CASES = ((128, 0.5, 8, "float32"), (128, 1.0, 4, "float32"), (256, 0.5, 4, "float32"),
         (256, 1.0, 2, "float32"), (256, 1.0, 2, "mixed_bfloat16"),
         (192, 0.75, 6, "float32"))  # the last one: not among the fitted shapes' corners
QUICK_CASES = ((64, 0.25, 4, "float32"), (128, 0.25, 4, "float32"))


def case_config(size: int, width: float, batch: int, precision: str):
    from glcic_tf.config import get_preset

    return get_preset("paper").override({
        "data.image_size": size, "data.resize_min": size, "data.resize_max": size * 3 // 2,
        "masks.local_size": size // 2, "masks.hole_min": size * 3 // 8,
        "masks.hole_max": size // 2, "model.width": width, "schedule.batch_size": batch,
        "precision": precision})


def measure_case(size: int, width: float, batch: int, precision: str) -> dict:
    """In this process: one trainer, phase 3, two steps; the peak resident memory."""
    import keras
    import tensorflow as tf

    from glcic_tf.training import memory
    from glcic_tf.training import inputs
    from glcic_tf.training import trainer as trainer_lib
    from glcic_tf.benchmarks import machine
    from glcic_tf.benchmarks.training import synthetic_batch

    config = case_config(size, width, batch, precision)
    keras.utils.set_random_seed(0)
    trainer = trainer_lib.build_trainer(config)
    before = machine.current_memory_mb()
    ds = inputs.training_features(
        tf.data.Dataset.from_tensors(synthetic_batch(config, batch)).repeat())
    trainer.set_phase(3)
    trainer.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
    peak = machine.peak_memory_mb()
    est = memory.estimate(config, batch)
    return {"size": size, "width": width, "batch": batch, "precision": precision,
            "rss_after_build_mb": before, "peak_mb": peak,
            "estimate_mb": round(est.total / 2 ** 20, 1),
            "estimate_parts_mb": {k: round(v / 2 ** 20, 1) for k, v in (
                ("runtime", est.runtime), ("state", est.state),
                ("activations", est.activations))},
            "estimate_over_measured": round(est.total / 2 ** 20 / peak, 3)}


def run(quick: bool = False) -> dict:
    from glcic_tf.training import memory

    cases = QUICK_CASES if quick else CASES
    results = []
    for size, width, batch, precision in cases:
        out = subprocess.run(
            [sys.executable, "-m", "glcic_tf.benchmarks.train_memory", "--case",
             f"{size},{width},{batch},{precision}"], capture_output=True, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=1800)
        lines = [x for x in out.stdout.splitlines() if x.startswith("CASE ")]
        if out.returncode != 0 or not lines:
            results.append({"case": [size, width, batch, precision], "error": out.stderr[-2000:]})
            continue
        results.append(json.loads(lines[-1][5:]))
    good = [r for r in results if "peak_mb" in r and r["precision"] == "float32"]
    fit = None
    if len(good) >= 3:
        # peak = runtime + copies * 4 * params + k * width * size^2 * batch, least squares.
        per_copy = memory.PARAMETER_COPIES
        a = np.array([[1.0, r["estimate_parts_mb"]["state"] / per_copy * 2 ** 20,
                       r["width"] * r["size"] ** 2 * r["batch"]] for r in good])
        y = np.array([r["peak_mb"] * 2 ** 20 for r in good])
        runtime, copies, k = np.linalg.lstsq(a, y, rcond=None)[0]
        fit = {"runtime_mib": round(float(runtime) / 2 ** 20, 1),
               "parameter_copies": round(float(copies), 2),
               "activation_bytes": round(float(k), 1)}
    ratios = [r["estimate_over_measured"] for r in results if "estimate_over_measured" in r]
    return {"benchmark": "train_memory", "quick": quick, "cases": results, "fit": fit,
            "constants": {"activation_bytes": memory.ACTIVATION_BYTES,
                          "runtime_mib": memory.RUNTIME_BYTES / 2 ** 20,
                          "parameter_copies": memory.PARAMETER_COPIES,
                          "mixed_factor": memory.MIXED_FACTOR},
            "within_30_pct": bool(ratios) and all(0.7 <= r <= 1.3 for r in ratios)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", help="SIZE,WIDTH,BATCH,PRECISION: measure one case here")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    if args.case:
        size, width, batch, precision = args.case.split(",")
        print("CASE " + json.dumps(measure_case(int(size), float(width), int(batch),
                                                precision)))
        return 0
    print(json.dumps(run(quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
