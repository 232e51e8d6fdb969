"""Completion latency: Keras model, exported SavedModel, post-processing, fp32 vs bf16.

Full-width (width 1.0, the paper's) completion network with random He-normal weights (so that
outputs vary and the bf16/fp32 PSNR means something), at 256x256 and 512x512:

* `keras_*`: `model(x, training=False)` inside a tf.function traced for the input's shape;
  `keras_bfloat16` is the model rebuilt under the "mixed_bfloat16" policy. The networks use
  `glcic_tf.networks.batch_norm.FusedBatchNormalization` (the default);
  `keras_float32_keras_batch_norm` and `saved_model_complete_float32_keras_batch_norm` are the
  same weights with Keras' own BatchNormalization, the A/B of issue 14.
* `folded_*`: the same with batch norm folded into the convolutions
  (`folding.FoldedNetwork`); `folded_bfloat16` is what bf16 exports and
  `Completer(precision="bfloat16")` run: bf16 except `folding.BFLOAT16_FLOAT32_LAYERS`
  (conv1, conv2, conv10, output_conv) in float32; `folded_bfloat16_all` is all bf16.
* `saved_model`: the exported `complete` signature (export + `tf.saved_model.load`) as
  exported by default: batch norm folded (float32: live, from the Keras variables; bfloat16:
  into bf16 kernels); `saved_model_complete_float32_unfolded` and
  `saved_model_complete_float32_keras_batch_norm` are float32 exports without folding, with
  the fused batch norm layer and with Keras' own.
* `completer`: `Completer.complete` on a uint8 image with 2-4 random holes (resizing checks,
  compositing, quantisation), without and with the paper's post-processing (OpenCV, and
  in-graph: `glcic_tf.inference.poisson`).
* `postprocess_in_graph_only*`: `poisson.postprocess_image` alone (a tf.function; float32 for
  either network precision) on the random holes and on the centre hole; its time over the
  `complete` signature's of each precision is `in_graph_postprocess_overhead_pct`.
* `forward_conv_bound`: the float32 network's convolutions (kernel + bias) timed alone at the
  largest size, per layer and summed, and the fraction of the matmul peak (measured in the
  same process) that sum allows: the ceiling of float32 completion without faster kernels.
* PSNR of each variant's output against the Keras float32 model's (whole network output in
  [0, 1]), with random He-normal weights (seed 0; a trained network's PSNR may differ), and
  for the default bf16 network at 512x512 with weight seeds 0-3.

Each figure is the median of `runs` timed calls after `warmup` calls, with min and max; the
variants are timed round-robin so that other processes on a shared machine slow all alike. GFLOP/s
counts 260 GFLOP per 512x512 image (130 GMAC, Table 1 layers; scaled by pixel count, and by
width^2 for --quick).

Usage:
  python -m glcic_tf.benchmarks.completion           # ~3-5 min on a 2-core CPU, prints JSON
  python -m glcic_tf.benchmarks.completion --quick   # width 1/4, 64/128 px: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np

from glcic_tf import console

GFLOP_512 = 260.0


def he_normal_weights(model, seed: int = 0, output_std: float = 1.5) -> None:
    """Random weights whose outputs vary like a trained network's, for benchmarks and tests.

    Conv kernels are He-normal (std sqrt(2 / fan_in)), biases zero; then the output layer is
    rescaled so that its pre-sigmoid values have standard deviation `output_std` on a random
    64x64 input, so that outputs span [0, 1]. (With batch norm in inference mode, Keras'
    default Glorot-uniform kernels shrink activations layer by layer and the output is ~0.5
    everywhere, which makes precision comparisons meaningless.)
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kernel, bias = layer.get_weights()
            k0, k1 = kernel.shape[:2]
            if isinstance(layer, keras.layers.Conv2DTranspose):
                # (k, k, out, in); stride 2: each output sees a quarter of the kernel taps.
                fan_in = k0 * k1 * kernel.shape[3] // 4
            else:
                fan_in = k0 * k1 * kernel.shape[2]
            layer.set_weights([rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape)
                               .astype(np.float32), np.zeros_like(bias)])
    output = model.get_layer("output_conv")
    probe = keras.Model(model.inputs, output.output)
    x = {"image": rng.random((1, 64, 64, 3)).astype(np.float32),
         "mask": np.zeros((1, 64, 64, 1), np.float32)}
    std = float(np.std(probe(x, training=False)))
    kernel, bias = output.get_weights()
    output.set_weights([kernel * (output_std / max(std, 1e-8)), bias])


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical arrays)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def _timed_interleaved(fns: dict, runs: int, warmup: int) -> dict:
    """Times every function `runs` times, round-robin, so that load from other processes on
    a shared machine hits all variants alike; returns median/min/max seconds per name."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
                   "max_s": round(max(t), 4), "runs": runs} for name, t in times.items()}


def _gflops(size: int, seconds: float, width: float = 1.0) -> float:
    # Channel counts scale by `width` on both sides of (almost) every layer: FLOPs by width^2.
    return round(GFLOP_512 * width * width * (size / 512.0) ** 2 / seconds, 1)


def _psnr_by_seed(config, size: int, seeds=(0, 1, 2, 3)) -> dict:
    """PSNR of the default bf16 folded network against float32 for several weight seeds."""
    import keras
    import tensorflow as tf

    from glcic_tf.data import masks
    from glcic_tf.networks import folding, models

    rng = np.random.default_rng(0)
    image = rng.random((1, size, size, 3)).astype(np.float32)
    hole = np.zeros((1, size, size, 1), np.float32)
    hole[:, size // 4:size - size // 4, size // 4:size - size // 4] = 1.0
    inputs = masks.network_inputs(tf.constant(image), tf.constant(hole), config.data)
    out = {}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = models.completion_network(config.model.width, config.model)
        he_normal_weights(model, seed=seed)
        want = model(inputs, training=False).numpy()
        bf16 = folding.fold_batch_norm(model, "bfloat16")
        out[f"seed{seed}"] = round(psnr(bf16(inputs).numpy(), want), 2)
    return out


def run(quick: bool = False) -> dict:
    """Runs the benchmark and returns the figures (see the module docstring).

    Args:
      quick: width 1/4 at 64 and 128 px with fewer runs: a smoke run, not the real figures.
    """
    import keras
    import tensorflow as tf

    from glcic_tf.inference import export, files, postprocessing
    from glcic_tf.inference.completer import Completer
    from glcic_tf.data import masks
    from glcic_tf.networks import folding, models
    from glcic_tf.inference import poisson
    from glcic_tf.config import get_preset

    width = 0.25 if quick else 1.0
    sizes = (64, 128) if quick else (256, 512)
    runs, warmup = (2, 1) if quick else (5, 2)
    config = get_preset("paper").override({"model.width": width})
    keras.utils.set_random_seed(0)
    fp32 = models.completion_network(width, config.model)
    he_normal_weights(fp32, seed=0)
    networks = {
        "keras_float32": fp32,
        "keras_bfloat16": export._bfloat16_copy(fp32, config),  # mixed_bfloat16 policy
        "folded_float32": folding.fold_batch_norm(fp32, "float32"),
        "folded_bfloat16": folding.fold_batch_norm(fp32, "bfloat16"),
        "folded_bfloat16_all": folding.fold_batch_norm(fp32, "bfloat16", float32_layers=()),
        "keras_float32_keras_batch_norm": models.completion_network(width, config.model,
                                                                    batch_norm="keras"),
    }
    networks["keras_float32_keras_batch_norm"].set_weights(fp32.get_weights())
    rng = np.random.default_rng(0)

    result: dict = {
        "benchmark": "completion",
        "quick": quick,
        "width": width,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "gflop_at_512": GFLOP_512,
        "bfloat16_float32_layers": list(folding.BFLOAT16_FLOAT32_LAYERS),
        "timing": f"median of {runs} runs after {warmup} warm-up runs, variants interleaved",
        "sizes": {},
    }
    tmp = tempfile.mkdtemp(prefix="glcic-bench-")
    try:
        loaded = {}
        for precision in ("float32", "bfloat16"):
            path = export.export_saved_model(fp32, config, os.path.join(tmp, "glcic"),
                                             precision=precision)
            loaded[precision] = tf.saved_model.load(path)
        # The float32 export folds batch norm (the default); the A/B without folding, with the
        # fused layer and with Keras' own batch norm.
        path = export.export_saved_model(fp32, config, os.path.join(tmp, "glcic_unfolded"),
                                         precision="float32", fold_batch_norm=False)
        loaded["float32_unfolded"] = tf.saved_model.load(path)
        path = export.export_saved_model(networks["keras_float32_keras_batch_norm"], config,
                                         os.path.join(tmp, "glcic_keras_bn"), precision="float32",
                                         fold_batch_norm=False)
        loaded["float32_keras_batch_norm"] = tf.saved_model.load(path)
        for size in sizes:
            image = rng.random((1, size, size, 3)).astype(np.float32)
            hole = np.zeros((1, size, size, 1), np.float32)
            q = size // 4
            hole[:, q:size - q, q:size - q] = 1.0
            inputs = masks.network_inputs(tf.constant(image), tf.constant(hole), config.data)
            image_u8 = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            holes = files.random_holes(size, size, np.random.default_rng(1),
                                       hole_size=(size // 8, size // 4))
            fns, outputs = {}, {}
            for name, model in networks.items():
                fn = tf.function(lambda x, m=model: m(x, training=False))
                outputs[name] = fn(inputs).numpy()
                fns[name] = lambda fn=fn: fn(inputs).numpy()
            for name, module in loaded.items():
                signature = module.signatures["complete"]
                args = {"image": tf.constant(image), "mask": tf.constant(hole)}
                fns[f"saved_model_complete_{name}"] = (
                    lambda s=signature, a=args: s(**a)["completed"].numpy())
            for name in ("float32", "bfloat16"):
                completer = Completer.from_model(config, fp32, precision=name)
                for post, suffix in (("none", ""), ("opencv", "_postprocess"),
                                     ("in-graph", "_postprocess_in_graph")):
                    fns[f"completer_{name}{suffix}"] = (lambda c=completer, p=post: c.complete(
                        image_u8, holes, postprocess=p, maxdim=size))
            fns["postprocess_only"] = lambda: postprocessing.postprocess(image_u8, holes)
            # The in-graph post-processing alone (float32 whatever the network's precision),
            # on the random holes and on the centre hole of the network timings.
            in_graph = tf.function(poisson.postprocess_image)
            random_f = tf.constant(holes[..., None].astype(np.float32))
            image_f = tf.constant(image_u8.astype(np.float32) / 255.0)
            fns["postprocess_in_graph_only"] = lambda: in_graph(image_f, random_f).numpy()
            fns["postprocess_in_graph_only_centre_hole"] = (
                lambda: in_graph(tf.constant(image[0]), tf.constant(hole[0])).numpy())
            entry = _timed_interleaved(fns, runs, warmup)
            for name in list(networks) + [f"saved_model_complete_{n}" for n in loaded]:
                entry[name]["gflop_per_s"] = _gflops(size, entry[name]["median_s"], width)
            for name in list(networks)[1:]:
                entry[name]["psnr_vs_keras_float32_db"] = round(
                    psnr(outputs[name], outputs["keras_float32"]), 2)
            # Post-processing's own time over the completion's: the difference of two noisy
            # medians on a shared machine can be off by more than the post-processing itself.
            entry["postprocess_overhead_pct"] = float(round(
                100.0 * entry["postprocess_only"]["median_s"]
                / entry["completer_float32"]["median_s"], 1))
            # The in-graph post-processing over the network alone (the `complete` signature
            # of each precision), on the random holes and on the centre hole.
            entry["in_graph_postprocess_overhead_pct"] = {
                f"{precision}{suffix}": float(round(
                    100.0 * entry[f"postprocess_in_graph_only{suffix}"]["median_s"]
                    / entry[f"saved_model_complete_{precision}"]["median_s"], 1))
                for precision in ("float32", "bfloat16") for suffix in ("", "_centre_hole")}
            result["sizes"][str(size)] = entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # What bounds float32 completion: the convolution kernels alone at the largest size.
    from glcic_tf.benchmarks import calibration, step_profile

    peak = calibration.matmul_gflops(1024 if quick else 4096, "float32", 3)["gflop_per_s_max"]
    result["forward_conv_bound"] = step_profile.forward_conv_bound(fp32, max(sizes), peak,
                                                                   runs=runs)
    result["forward_conv_bound"]["matmul_peak_gflop_per_s_in_process"] = peak
    if not quick:
        # The PSNR depends on the random weights: the default bf16 network for a few seeds.
        result["psnr_512_folded_bfloat16_by_weights_seed"] = _psnr_by_seed(config, 512)
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if not quick:
        at512 = result["sizes"]["512"]
        result["targets_512"] = {
            "fp32_le_1.35_s": bool(at512["keras_float32"]["median_s"] <= 1.35),
            "fp32_folded_le_1.35_s": bool(at512["folded_float32"]["median_s"] <= 1.35),
            "bf16_folded_le_0.80_s": bool(at512["folded_bfloat16"]["median_s"] <= 0.80),
            "bf16_psnr_ge_40_db": bool(
                at512["folded_bfloat16"]["psnr_vs_keras_float32_db"] >= 40.0),
            "postprocess_le_10_pct": bool(at512["postprocess_overhead_pct"] <= 10.0),
            "in_graph_postprocess_float32_le_15_pct": bool(
                at512["in_graph_postprocess_overhead_pct"]["float32"] <= 15.0),
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (not figures)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    print(json.dumps(run(quick=args.quick), indent=2,
                     default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
