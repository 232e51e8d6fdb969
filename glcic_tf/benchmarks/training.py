"""Training throughput: images/s of a phase-1 and a phase-3 step of the paper's networks.

The paper preset at full width, 256x256 crops, batch 4 (`get_preset("paper")` with
`schedule.batch_size` 4), built by `training.build_trainer` exactly as training does, fed an
in-memory batch of smooth random images with one 96-128 px hole each (through
`training.training_features`, so the step sees what `fit()` sees). For each precision and phase:
one warm-up `fit()` step (tracing, allocation), then `steps` calls of the compiled
`trainer.train_function`, each timed on its own (the step's loss is read back, so the time
covers the whole step); figures are the median with min and max. `cores_used` (CPU seconds per
wall second over the timed steps) shows when other processes took cores away: on a shared
machine compare variants only at similar `cores_used`.

Precisions: float32 always; on a CPU with AVX512_BF16 / AMX also "mixed_bfloat16" (Keras' policy
set before the models are built and reset afterwards); on a GPU "mixed_float16" (loss scaling).
Phase 1 is also timed with `jit_compile=True` (XLA) in float32 unless --quick.

FLOP accounting (multiply-adds count 2): the completion network's forward pass costs about 65
GFLOP per 256x256 image (260 GFLOP at 512x512). A phase-1 step is forward + backward: about
3 x 65 = 195 GFLOP per image. A phase-3 step adds the context discriminator (real, completed and
completed-again forward passes, two backward passes) for about 265 GFLOP per image. Achieved
GFLOP/s = images/s x GFLOP per image, compared with the machine's matmul peak measured here
(`calibration.matmul_gflops`, N = 2048). Targets (the project's): phase 3 >= 0.65 images/s in
float32 and >= 1.1 images/s in mixed bfloat16 on the reference 2-core CPU.

Usage:
  python -m glcic_tf.benchmarks.training          # ~5-8 min on a 2-core CPU
  python -m glcic_tf.benchmarks.training --quick  # width 1/4, 128 px, batch 2, 2 steps: a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from typing import Sequence

import numpy as np

GFLOP_PER_IMAGE_256 = {1: 195.0, 3: 265.0}
TARGETS = {("float32", 3): 0.65, ("mixed_bfloat16", 3): 1.1}


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict:
    """A training batch (image, mask, local_offset) of smooth colour waves with rect holes."""
    from glcic_tf import training

    batch = training.synthetic_batch(config, batch_size, seed=seed)
    return {k: batch[k] for k in training.TRAIN_FEATURES}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def gflop_per_image(phase: int, config) -> float:
    """Approximate GFLOP of one training step per image (scaled by width^2 and pixel count)."""
    scale = config.model.width ** 2 * (config.data.image_size / 256.0) ** 2
    return GFLOP_PER_IMAGE_256[phase] * scale


def _time_variant(config, phase_list: Sequence[int], batch: dict, steps: int) -> dict:
    """Builds one trainer and times each phase; returns {phase: figures}."""
    import keras
    import tensorflow as tf

    from glcic_tf import training
    from glcic_tf.benchmarks import machine

    machine.reset_peak_memory()
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    trainer = training.build_trainer(config)
    build_s = time.perf_counter() - t0
    ds = training.training_features(tf.data.Dataset.from_tensors(batch).repeat())
    batch_size = int(batch["image"].shape[0])
    out = {}
    for phase in phase_list:
        trainer.set_phase(phase)
        t0 = time.perf_counter()
        trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # trace + first step
        warmup_s = time.perf_counter() - t0
        iterator = iter(ds)
        times = []
        cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            logs = trainer.train_function(iterator)
            for value in logs.values():  # wait for the step: read its results back
                float(np.asarray(value))
            times.append(time.perf_counter() - t0)
        cores_used = (_cpu_seconds() - cpu_start) / (time.perf_counter() - wall_start)
        median = statistics.median(times)
        rates = [batch_size / t for t in times]
        gflop = gflop_per_image(phase, config)
        out[phase] = {
            "step_s_median": round(median, 3), "step_s_min": round(min(times), 3),
            "step_s_max": round(max(times), 3),
            "images_per_s_median": round(batch_size / median, 3),
            "images_per_s_min": round(min(rates), 3), "images_per_s_max": round(max(rates), 3),
            "steps": steps, "warmup_fit_s": round(warmup_s, 1),
            # CPU seconds per wall second during the timed steps: below the core count when
            # other processes took cores away (or the step cannot use them all).
            "cores_used": round(cores_used, 2),
            "gflop_per_image": round(gflop, 1),
            "achieved_gflop_per_s": round(gflop * batch_size / median, 1),
        }
    out["build_s"] = round(build_s, 1)
    out["peak_memory_mb"] = machine.peak_memory_mb()
    del trainer
    keras.backend.clear_session()
    gc.collect()
    return out


def run(quick: bool = False, peaks: dict | None = None) -> dict:
    """Times phase-1 and phase-3 steps per precision (see the module docstring).

    Args:
      quick: width 1/4 at 128 px, batch 2, 2 timed steps, no XLA comparison: a smoke run.
      peaks: {"float32": GFLOP/s, "bfloat16": ..., "float16": ...} to compare with; default:
        measured here with a 2048 (quick: 1024) matmul.
    """
    import keras
    import tensorflow as tf

    from glcic_tf.benchmarks import calibration, machine
    from glcic_tf.config import get_preset

    if quick:
        config = get_preset("paper").override({
            "schedule.batch_size": 2, "model.width": 0.25, "data.image_size": 128,
            "data.resize_min": 128, "data.resize_max": 192, "masks.local_size": 64,
            "masks.hole_min": 48, "masks.hole_max": 64})
        steps = 2
    else:
        config = get_preset("paper").override({"schedule.batch_size": 4})
        steps = 4
    gpu = bool(tf.config.list_logical_devices("GPU"))
    bf16 = machine.has_bf16()
    precisions = ["float32"]
    skipped = {}
    if gpu:
        precisions.append("mixed_float16")
    elif bf16:
        precisions.append("mixed_bfloat16")
    else:
        skipped["mixed_bfloat16"] = "CPU without AVX512_BF16 / AMX: bfloat16 is emulated"
    device = "gpu" if gpu else "cpu"
    if peaks is None:
        n = 1024 if quick else 2048
        dev = tf.config.list_logical_devices("GPU")[0].name if gpu else None
        peaks = {dt: calibration.matmul_gflops(n, dt, 3, dev)["gflop_per_s_max"]
                 for dt in (("float32", "float16") if gpu else ("float32", "bfloat16"))}
        peak_source = f"tf.matmul {n}x{n}x{n} measured in this process"
    else:
        peak_source = "given"
    batch = synthetic_batch(config, config.schedule.batch_size)
    load_start = os.getloadavg()[0]
    variants = {}
    for precision in precisions:
        compute = {"float32": "float32", "mixed_bfloat16": "bfloat16",
                   "mixed_float16": "float16"}[precision]
        keras.mixed_precision.set_global_policy(precision)
        try:
            figures = _time_variant(config.override({"precision": precision}), (1, 3), batch,
                                    steps)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        for phase in (1, 3):
            entry = figures[phase]
            peak = peaks.get(compute)
            entry["peak_gflop_per_s"] = peak
            entry["fraction_of_peak"] = (round(entry["achieved_gflop_per_s"] / peak, 3)
                                         if peak else None)
            target = TARGETS.get((precision, 3)) if phase == 3 and not quick else None
            if target is not None:
                entry["target_images_per_s"] = target
                entry["meets_target"] = entry["images_per_s_median"] >= target
            variants[f"phase{phase}_{precision}"] = entry
        variants[f"build_{precision}"] = {"build_s": figures["build_s"],
                                          "peak_memory_mb": figures["peak_memory_mb"]}
    if not quick:
        try:
            figures = _time_variant(config.override({"jit_compile": True}), (1,), batch,
                                    max(2, steps - 1))
            entry = figures[1]
            entry["peak_gflop_per_s"] = peaks.get("float32")
            entry["fraction_of_peak"] = round(entry["achieved_gflop_per_s"]
                                              / peaks["float32"], 3)
            entry["peak_memory_mb"] = figures["peak_memory_mb"]
            variants["phase1_float32_jit"] = entry
        except Exception as e:  # noqa: BLE001 -- XLA support varies; report, don't fail
            variants["phase1_float32_jit"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    targets = {}
    for precision in precisions:
        key = f"phase3_{precision}"
        if "meets_target" in variants.get(key, {}):
            targets[f"{key}_ge_{variants[key]['target_images_per_s']}_img_s"] = (
                variants[key]["meets_target"])
    return {
        "benchmark": "training",
        "quick": quick,
        "device": device,
        "preset": config.name,
        "width": config.model.width,
        "image_size": config.data.image_size,
        "batch_size": config.schedule.batch_size,
        "timing": f"median of {steps} train_function calls after a warm-up fit() step",
        "flop_accounting": "GFLOP per 256x256 image at width 1: phase 1 195 (3 x 65, forward "
                           "+ backward of C), phase 3 265 (C and D); scaled by width^2 and "
                           "pixel count",
        "peaks_gflop_per_s": peaks,
        "peak_source": peak_source,
        "precisions": precisions,
        "skipped": skipped,
        "variants": variants,
        "targets_met": targets if targets else None,
        "cpus": os.cpu_count(),
        "load_average_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "tensorflow": tf.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="width 1/4, 128 px, batch 2, 2 steps (a smoke run, not figures)")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
