"""Training throughput: images/s of a phase-1 and a phase-3 step of the paper's networks.

The paper preset at full width, 256x256 crops, batch 4 (`get_preset("paper")` with
`schedule.batch_size` 4), built by `trainer.build_trainer` exactly as training does, fed an
in-memory batch of smooth random images with one 96-128 px hole each (through
`inputs.training_features`, so the step sees what `fit()` sees). For each precision and phase:
one warm-up `fit()` step (tracing, allocation), then `steps` calls of the compiled
`trainer.train_function`, each timed on its own (the step's loss is read back, so the time
covers the whole step); figures are the median with min and max. `cores_used` (CPU seconds per
wall second over the timed steps) shows when other processes took cores away: on a shared
machine compare variants only at similar `cores_used`.

Precisions: float32 always; on a CPU with AVX512_BF16 / AMX also "mixed_bfloat16" (Keras' policy
set before the models are built and reset afterwards); on a GPU "mixed_float16" (loss scaling).
Phase 1 is also timed with `jit_compile=True` (XLA) in float32 unless --quick, and the CPU
quality preset's own shape (`photos128`: 128 px, width 1/2, batch 16, harmonic residual) in
float32 (`photos128_phase*` entries) unless --quick.

Each case builds two trainers, one with the default
`glcic_tf.networks.batch_norm.FusedBatchNormalization` and one with Keras' own BatchNormalization
(`batch_norm="keras"`), and times their steps alternately (A, B, A, B, ...), so load from
other processes hits both alike: the entries are the fused trainer's, with `keras_batch_norm`
and `speedup_over_keras_batch_norm` beside them. Each entry also holds `time_split` (input,
forward, backward, optimizer, other: see `glcic_tf.benchmarks.step_profile`) and `conv_bound`
(the step's convolution kernels timed alone: the fraction of the peak the step would reach if
nothing else took time); an entry below its `target_fraction_of_peak` says what bounds it in
`bounded_by`.

FLOP accounting (multiply-adds count 2): a step's convolutions counted from the networks' layer
shapes at the run's width and sizes (`step_profile.step_gflop_per_image`: phase 1 is C's forward
and both gradients, phase 3 adds the context discriminator's passes on the real and completed
images; tested against Table 1 by hand). Achieved GFLOP/s = images/s x GFLOP per image,
compared with the machine's matmul peak measured here (`calibration.matmul_gflops`, N = 2048).
Targets (the project's): phase 3 >= 0.65 images/s in
float32 and >= 1.1 images/s in mixed bfloat16 on the reference 2-core CPU; phases 1 and 3 at
>= 0.80 of the float32 peak and >= 0.75 of the bfloat16 peak (issue 14). Measured figures and
what bounds them: docs/training_speed.md.

Usage:
  python -m glcic_tf.benchmarks.training          # ~20-25 min on a 2-core CPU
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

from glcic_tf import console

TARGETS = {("float32", 3): 0.65, ("mixed_bfloat16", 3): 1.1}
# Issue 14: phase-1 and phase-3 steps at this fraction of the calibrated matmul peak.
FRACTION_TARGETS = {"float32": 0.80, "mixed_bfloat16": 0.75}


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict:
    """A training batch (image, mask, local_offset) of smooth colour waves with rect holes."""
    from glcic_tf.training import inputs

    batch = inputs.synthetic_batch(config, batch_size, seed=seed)
    return {k: batch[k] for k in inputs.TRAIN_FEATURES}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def gflop_per_image(phase: int, config) -> float:
    """GFLOP of one phase-1 or phase-3 training step per image: its convolutions, counted from
    the networks' layer shapes at the config's width, crop and local patch size
    (`step_profile.step_gflop_per_image`; 194.5 and 256.1 at width 1, 256 px)."""
    from glcic_tf.benchmarks import step_profile

    return step_profile.step_gflop_per_image(config.model, config.data.image_size,
                                             config.masks.local_size, phase)


def _time_steps(trainers: dict, phase: int, batch: dict, steps: int) -> dict:
    """Times `steps` train_function calls per trainer, interleaved; returns {name: figures}."""
    import tensorflow as tf

    from glcic_tf.training import inputs

    ds = inputs.training_features(tf.data.Dataset.from_tensors(batch).repeat())
    iterators, warmup = {}, {}
    for name, trainer in trainers.items():
        trainer.set_phase(phase)
        t0 = time.perf_counter()
        trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # trace + first step
        warmup[name] = time.perf_counter() - t0
        iterators[name] = iter(ds)
    times = {name: [] for name in trainers}
    cpu = {name: 0.0 for name in trainers}
    for _ in range(steps):
        for name, trainer in trainers.items():  # A, B, A, B, ...: same load for both
            c0, t0 = _cpu_seconds(), time.perf_counter()
            logs = trainer.train_function(iterators[name])
            for value in logs.values():  # wait for the step: read its results back
                float(np.asarray(value))
            times[name].append(time.perf_counter() - t0)
            cpu[name] += _cpu_seconds() - c0
    batch_size = int(batch["image"].shape[0])
    out = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        rates = [batch_size / t for t in ts]
        out[name] = {
            "step_s_median": round(median, 3), "step_s_min": round(min(ts), 3),
            "step_s_max": round(max(ts), 3),
            "images_per_s_median": round(batch_size / median, 3),
            "images_per_s_min": round(min(rates), 3), "images_per_s_max": round(max(rates), 3),
            "steps": steps, "warmup_fit_s": round(warmup[name], 1),
            # CPU seconds per wall second during the timed steps: below the core count when
            # other processes took cores away (or the step cannot use them all).
            "cores_used": round(cpu[name] / sum(ts), 2),
        }
    return out


def _time_variant(config, phase_list: Sequence[int], batch: dict, steps: int, *,
                  ab: bool = False, profile: bool = False, peak: float | None = None) -> dict:
    """Builds the trainer(s) and times each phase; returns {phase: figures}.

    ab: also builds a trainer with Keras' own BatchNormalization and times its steps
      interleaved with the default (fused) one's: `keras_batch_norm` in each phase's figures.
    profile: adds the step's time split and convolution bound (`step_profile`).
    """
    import keras

    from glcic_tf.training import trainer as trainer_lib
    from glcic_tf.benchmarks import machine, step_profile

    machine.reset_peak_memory()
    trainers = {}
    t0 = time.perf_counter()
    for batch_norm in ("fused", "keras") if ab else ("fused",):
        keras.utils.set_random_seed(0)
        trainers[batch_norm] = trainer_lib.build_trainer(config, batch_norm=batch_norm)
    build_s = time.perf_counter() - t0
    batch_size = int(batch["image"].shape[0])
    out = {}
    for phase in phase_list:
        timed = _time_steps(trainers, phase, batch, steps)
        gflop = gflop_per_image(phase, config)
        for figures in timed.values():
            figures["gflop_per_image"] = round(gflop, 1)
            figures["achieved_gflop_per_s"] = round(
                gflop * batch_size / figures["step_s_median"], 1)
        entry = {"batch_norm": "fused", **timed["fused"]}
        if ab:
            keras_bn = timed["keras"]
            entry["keras_batch_norm"] = {
                k: keras_bn[k] for k in ("step_s_median", "step_s_min", "step_s_max",
                                         "images_per_s_median", "cores_used",
                                         "achieved_gflop_per_s")}
            entry["speedup_over_keras_batch_norm"] = round(
                keras_bn["step_s_median"] / entry["step_s_median"], 3)
        if profile:
            fused = trainers["fused"]
            entry["time_split"] = step_profile.time_split(fused, phase, batch,
                                                          max(3, steps - 1))
            entry["conv_bound"] = step_profile.conv_bound(fused, phase, batch, peak)
            counted = entry["conv_bound"]["counted_gflop_per_image"]
            entry["achieved_gflop_per_s_counted"] = round(
                counted * batch_size / entry["step_s_median"], 1)
        out[phase] = entry
    out["build_s"] = round(build_s, 1)
    out["peak_memory_mb"] = machine.peak_memory_mb()
    del trainers
    keras.backend.clear_session()
    gc.collect()
    return out


def _limit(entry: dict, target: float) -> str:
    """What keeps a step below `target` (a fraction of the peak), from its profile."""
    bound = entry.get("conv_bound") or {}
    ceiling = bound.get("fraction_of_peak_if_only_convolutions")
    if ceiling is not None and ceiling < target:
        rates = bound.get("conv_gflop_per_s_by_kind", {})
        return (f"the convolution kernels: alone at these shapes they reach {ceiling} of the "
                f"peak (GFLOP/s forward {rates.get('forward')}, input gradient "
                f"{rates.get('grad_input')}, kernel gradient {rates.get('grad_kernel')})")
    if bound.get("conv_s") is not None:
        rest = entry["step_s_median"] - bound["conv_s"]
        return (f"time outside the convolution kernels: {rest:.3f} s of the "
                f"{entry['step_s_median']} s step (see time_split)")
    return "not profiled"


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
        steps = 5
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
    load_start = os.getloadavg()
    variants = {}
    cases = [(precision, config, "") for precision in precisions]
    # The CPU quality preset's own shape (128 px, width 1/2, batch 16, harmonic residual).
    if not quick:
        cases.append(("float32", get_preset("photos128"), "photos128_"))
    for precision, base, prefix in cases:
        compute = {"float32": "float32", "mixed_bfloat16": "bfloat16",
                   "mixed_float16": "float16"}[precision]
        peak = peaks.get(compute)
        case_config = base.override({"precision": precision})
        batch = synthetic_batch(case_config, case_config.schedule.batch_size)
        keras.mixed_precision.set_global_policy(precision)
        try:
            figures = _time_variant(case_config, (1, 3), batch, steps, ab=True, profile=True,
                                    peak=peak)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        for phase in (1, 3):
            entry = figures[phase]
            entry["peak_gflop_per_s"] = peak
            entry["fraction_of_peak"] = (round(entry["achieved_gflop_per_s"] / peak, 3)
                                         if peak else None)
            if peak and "achieved_gflop_per_s_counted" in entry:
                entry["fraction_of_peak_counted"] = round(
                    entry["achieved_gflop_per_s_counted"] / peak, 3)
            if "keras_batch_norm" in entry and peak:
                entry["keras_batch_norm"]["fraction_of_peak"] = round(
                    entry["keras_batch_norm"]["achieved_gflop_per_s"] / peak, 3)
            if not quick and not prefix:
                target = TARGETS.get((precision, 3)) if phase == 3 else None
                if target is not None:
                    entry["target_images_per_s"] = target
                    entry["meets_target"] = entry["images_per_s_median"] >= target
                fraction_target = FRACTION_TARGETS.get(precision)
                if fraction_target is not None and entry["fraction_of_peak"] is not None:
                    entry["target_fraction_of_peak"] = fraction_target
                    entry["meets_fraction_target"] = (entry["fraction_of_peak"]
                                                      >= fraction_target)
                    if not entry["meets_fraction_target"]:
                        entry["bounded_by"] = _limit(entry, fraction_target)
            variants[f"{prefix}phase{phase}_{precision}"] = entry
        variants[f"build_{prefix}{precision}"] = {"build_s": figures["build_s"],
                                                  "peak_memory_mb": figures["peak_memory_mb"]}
    if not quick:
        try:
            figures = _time_variant(config.override({"jit_compile": True}), (1,),
                                    synthetic_batch(config, config.schedule.batch_size),
                                    max(2, steps - 2))
            entry = figures[1]
            entry["peak_gflop_per_s"] = peaks.get("float32")
            entry["fraction_of_peak"] = round(entry["achieved_gflop_per_s"]
                                              / peaks["float32"], 3)
            entry["peak_memory_mb"] = figures["peak_memory_mb"]
            variants["phase1_float32_jit"] = entry
        except Exception as e:  # noqa: BLE001 -- XLA support varies; report, don't fail
            variants["phase1_float32_jit"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    targets = {}
    for name, entry in variants.items():
        if "meets_target" in entry:
            targets[f"{name}_ge_{entry['target_images_per_s']}_img_s"] = entry["meets_target"]
        if "meets_fraction_target" in entry:
            targets[f"{name}_ge_{entry['target_fraction_of_peak']}_of_peak"] = (
                entry["meets_fraction_target"])
    return {
        "benchmark": "training",
        "quick": quick,
        "device": device,
        "preset": config.name,
        "width": config.model.width,
        "image_size": config.data.image_size,
        "batch_size": config.schedule.batch_size,
        "timing": f"median of {steps} train_function calls after a warm-up fit() step, "
                  "the fused and Keras batch-norm trainers interleaved step by step",
        "flop_accounting": "the step's convolutions counted from the layer shapes at the "
                           "run's width and sizes (step_profile.step_gflop_per_image: per "
                           "256x256 image at width 1, phase 1 194.5 = forward + both "
                           "gradients of C less conv1's input gradient, phase 3 256.1 with "
                           "D's passes); conv_bound.counted_gflop_per_image is the same count",
        "peaks_gflop_per_s": peaks,
        "peak_source": peak_source,
        "precisions": precisions,
        "skipped": skipped,
        "variants": variants,
        "targets_met": targets if targets else None,
        "cpus": os.cpu_count(),
        "load_average_start_end": [[round(v, 2) for v in load_start],
                                   [round(v, 2) for v in os.getloadavg()]],
        "tensorflow": tf.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="width 1/4, 128 px, batch 2, 2 steps (a smoke run, not figures)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    print(json.dumps(run(quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
