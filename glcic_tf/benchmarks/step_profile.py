"""Where a training step's time goes, without a profiler: its split and its convolution bound.

`time_split(trainer, phase, batch, steps)` times, interleaved, four compiled functions of the
same trainer on the same batch and reports medians:

  input     `next()` on the step's input iterator (the in-memory batch that
            `glcic_tf.benchmarks.training` feeds; the decoding pipeline's own rate is the
            `input_pipeline` section);
  forward   the phase's forward passes and losses alone (phase 1: C; phase 3: C, D on the real
            and the completed images for D's step, D on the completed images again for C's);
  backward  `train_step` with both optimizers replaced by a sink that only reads one element
            of every gradient, minus `forward`;
  optimizer the whole `train_step`, minus forward + backward;
  other     Keras' `train_function` (what `fit()` runs) minus input + `train_step`.

`conv_bound(trainer, phase, batch)` times every convolution of the step alone at the step's
shapes (forward, gradient wrt the input, gradient wrt the kernel; Conv2DTranspose included) and
adds them up as often as the step runs them. Its `fraction_of_peak_if_only_convolutions` is
what the step would reach if everything else (batch norm, ReLU, losses, optimizer, the
runtime) took no time: the ceiling the convolution kernels put on the step. It also counts the
step's convolution FLOPs exactly (`counted_gflop_per_image`); `step_gflop_per_image` makes the
same count from the layer shapes alone, without running anything.

Both run inside `glcic_tf.benchmarks.training` (`python pipelines/benchmark.py --only
calibration,training`).
"""

from __future__ import annotations

import statistics
import time

import numpy as np


class _GradientSink:
    """Stands in for an optimizer: consumes one element of every gradient, updates nothing."""

    def __init__(self):
        import tensorflow as tf

        self.total = tf.Variable(0.0, trainable=False, name="gradient_sink")

    def scale_loss(self, loss):
        return loss

    def apply_gradients(self, grads_and_vars):
        import tensorflow as tf

        firsts = [tf.cast(tf.reshape(g, [-1])[0], tf.float32)
                  for g, _ in grads_and_vars if g is not None]
        self.total.assign_add(tf.add_n(firsts))


def _forward_fn(trainer, phase: int):
    import tensorflow as tf

    from glcic_tf.data import masks as masks_lib
    from glcic_tf.training import losses

    bn = trainer._bn_training

    def forward(data):
        out = trainer.completion(trainer._inputs(data), training=bn)
        loss = tf.reduce_mean(trainer._reconstruction(out, data))
        if phase == 3:
            completed = masks_lib.composite(out, data["image"], data["mask"])
            loss += tf.reduce_mean(trainer._d_losses(data, tf.stop_gradient(completed)))
            fake = trainer._d_logits(completed, data["local_offset"], training=bn)
            loss += tf.reduce_mean(losses.generator_gan_per_example(
                fake, trainer.glcic_config.loss.generator_gan))
        return loss

    return tf.function(forward)


def _read(result) -> None:
    """Waits for a step: reads its results back to the host."""
    import tensorflow as tf

    for value in tf.nest.flatten(result):
        np.asarray(value)


def time_split(trainer, phase: int, batch: dict, steps: int) -> dict:
    """Median seconds of input, forward, backward, optimizer and other (module docstring)."""
    import tensorflow as tf

    from glcic_tf.training import inputs

    if phase not in (1, 3):
        raise ValueError(f"time_split covers phases 1 and 3, got {phase!r}")
    trainer.set_phase(phase)
    ds = inputs.training_features(tf.data.Dataset.from_tensors(batch).repeat())
    iterator = iter(ds)
    data = next(iterator)
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)  # builds train_function
    full = tf.function(trainer.train_step)
    saved = trainer.c_optimizer, trainer.d_optimizer
    trainer.c_optimizer, trainer.d_optimizer = _GradientSink(), _GradientSink()
    try:
        no_update = tf.function(trainer.train_step)
        no_update.get_concrete_function(data)  # traced with the sinks in place
    finally:
        trainer.c_optimizer, trainer.d_optimizer = saved
    forward = _forward_fn(trainer, phase)
    train_function = trainer.train_function
    fns = {"input": lambda: next(iterator), "forward": lambda: forward(data),
           "forward_backward": lambda: no_update(data), "train_step": lambda: full(data),
           "train_function": lambda: train_function(iterator)}
    for fn in fns.values():  # trace and warm up
        _read(fn())
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            _read(fn())
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    split = {
        "input_s": med["input"],
        "forward_s": med["forward"],
        "backward_s": med["forward_backward"] - med["forward"],
        "optimizer_s": med["train_step"] - med["forward_backward"],
        "other_s": med["train_function"] - med["train_step"] - med["input"],
    }
    step = med["train_function"]
    return {
        "step_s": round(step, 4),
        **{k: round(v, 4) for k, v in split.items()},
        "share_of_step": {k[:-2]: round(v / step, 3) for k, v in split.items()},
        "timing": f"median of {steps} interleaved calls of each function; backward, optimizer "
                  "and other are differences of medians (can come out slightly negative)",
    }


def _conv_layers(model):
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_conv_layers(layer))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            found.append(layer)
    return found


def _layer_inputs(model, layers, inputs) -> list:
    """The tensors `layers` (of a functional `model`) see when `model` runs on `inputs`."""
    import keras

    probe = keras.Model(model.input, [layer.input for layer in layers])
    return probe(inputs, training=False)


def _conv_flop(layer, x_shape) -> float:
    """2 x multiply-adds of one forward pass of a (transposed) convolution on x_shape."""
    import keras

    kh, kw = layer.kernel_size
    cin, cout = int(x_shape[-1]), layer.filters
    b, h, w = int(x_shape[0]), int(x_shape[1]), int(x_shape[2])
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return 2.0 * b * h * w * kh * kw * cin * cout  # every input pixel scatters a kernel
    sh, sw = layer.strides
    return 2.0 * b * -(-h // sh) * -(-w // sw) * kh * kw * cin * cout


def _passes(network: str, index: int) -> tuple[int, int, int]:
    """(forward, kernel-gradient, input-gradient) passes one training step makes through the
    `index`-th convolution of the completion network or of a discriminator branch.

    C (phases 1 and 3): one forward, one kernel gradient, one input gradient except for the
    first layer (nothing needs the gradient wrt the network's input). D (phase 3): forward on
    the real, the completed and the completed images again; D's step takes kernel and input
    gradients of the real and completed passes (none wrt the images themselves), C's step the
    input gradients of the last pass only (down to the completed image).
    """
    if network == "completion":
        return 1, 1, 0 if index == 0 else 1
    return 3, 2, 3 if index else 1


def step_gflop_per_image(model_config, image_size: int, local_size: int, phase: int) -> float:
    """GFLOP of one phase-1 or phase-3 training step's convolutions per image, counted from the
    networks' layer shapes (built, never run) with `_passes`' multiplicities: the accounting
    `conv_bound` times and the benchmark's fractions of peak divide by."""
    import keras

    from glcic_tf.networks import models

    if phase not in (1, 3):
        raise ValueError(f"step_gflop_per_image covers phases 1 and 3, got {phase!r}")
    c, d = models.build_models(model_config, image_size, local_size)

    def spec(model, size):
        return keras.tree.map_structure(
            lambda t: keras.KerasTensor((1, size, size) + tuple(t.shape[3:]), t.dtype),
            model.input)

    branches = [("completion", c, spec(c, image_size))]
    if phase == 3:
        for name, size in (("global_discriminator", image_size),
                           ("local_discriminator", local_size)):
            branch = d.get_layer(name)
            branches.append(("discriminator", branch, spec(branch, size)))
    flop = 0.0
    for network, model, inputs in branches:
        layers = _conv_layers(model)
        probe = keras.Model(model.input, [layer.input for layer in layers])
        specs = probe.compute_output_spec(inputs)
        for i, (layer, spec) in enumerate(zip(layers, specs)):
            flop += sum(_passes(network, i)) * _conv_flop(layer, spec.shape)
    return flop / 1e9


def forward_conv_bound(model, size: int, peak_gflop_per_s: float | None,
                       runs: int = 5) -> dict:
    """The completion network's convolutions alone, forward, at `size` x `size` (batch 1).

    Each Keras Conv2D / Conv2DTranspose (kernel and bias) runs alone on the input it sees in
    the network, best of `runs`; their sum is the time a completion cannot beat without faster
    kernels, and `ceiling_fraction` the fraction of the matmul peak it allows. `layers` lists
    each one's GFLOP, milliseconds and fraction of the peak, so the slow ones are named.
    """
    import numpy as np

    layers = _conv_layers(model)
    rng = np.random.default_rng(0)
    inputs = {"image": rng.random((1, size, size, 3)).astype(np.float32),
              "mask": (rng.random((1, size, size, 1)) > 0.5).astype(np.float32)}
    rows, seconds, gflop = [], 0.0, 0.0
    for layer, x in zip(layers, _layer_inputs(model, layers, inputs)):
        t = _time_kernels(layer, x, runs, kinds=("forward",))["forward"]
        flop = _conv_flop(layer, x.shape) / 1e9
        seconds += t
        gflop += flop
        rows.append({"layer": layer.name, "input": [int(d) for d in x.shape[1:]],
                     "gflop": round(flop, 4), "ms": round(1e3 * t, 3),
                     "fraction_of_peak": (round(flop / t / peak_gflop_per_s, 3)
                                          if peak_gflop_per_s else None)})
    out = {"size": size, "gflop": round(gflop, 3), "seconds": round(seconds, 4),
           "gflop_per_s": round(gflop / seconds, 1), "layers": rows}
    if peak_gflop_per_s:
        out["ceiling_fraction"] = round(gflop / seconds / peak_gflop_per_s, 3)
    return out


def _time_kernels(layer, x, runs: int,
                  kinds: tuple = ("forward", "grad_input", "grad_kernel")) -> dict:
    """Best-of-`runs` seconds of forward, input-gradient and kernel-gradient (`kinds`) of one
    layer."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    y = layer(x)
    dy = tf.ones_like(y) * 1e-3

    @tf.function
    def forward(x):
        return layer(x)

    @tf.function
    def grad_input(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return tape.gradient(y, x, output_gradients=dy)

    @tf.function
    def grad_kernel(x, dy):
        with tf.GradientTape() as tape:
            y = layer(x)
        return tape.gradient(y, layer.kernel, output_gradients=dy)

    fns = {"forward": lambda: forward(x), "grad_input": lambda: grad_input(x, dy),
           "grad_kernel": lambda: grad_kernel(x, dy)}
    out = {}
    for name, fn in fns.items():
        if name not in kinds:
            continue
        _read(fn())
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            _read(fn())
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def conv_bound(trainer, phase: int, batch: dict, peak_gflop_per_s: float | None,
               runs: int = 3) -> dict:
    """The step's convolutions alone: seconds, exact GFLOP and the ceiling they imply."""
    import tensorflow as tf

    from glcic_tf.training import trainer as trainer_lib

    if phase not in (1, 3):
        raise ValueError(f"conv_bound covers phases 1 and 3, got {phase!r}")
    data = {k: tf.convert_to_tensor(v) for k, v in batch.items()}
    batch_size = int(data["image"].shape[0])
    c = trainer.completion
    c_layers = _conv_layers(c)
    # (layer, input, forward passes, kernel-gradient passes, input-gradient passes) per step
    jobs = [(layer, x, *_passes("completion", i)) for i, (layer, x) in enumerate(
        zip(c_layers, _layer_inputs(c, c_layers, trainer._inputs(data))))]
    if phase == 3:
        local = trainer_lib.crop_local(data["image"], data["local_offset"],
                                       trainer.glcic_config.masks.local_size)
        for branch, image in (("global_discriminator", data["image"]),
                              ("local_discriminator", local)):
            sub = trainer.discriminator.get_layer(branch)
            d_layers = _conv_layers(sub)
            for i, (layer, x) in enumerate(zip(d_layers, _layer_inputs(sub, d_layers, image))):
                jobs.append((layer, x, *_passes("discriminator", i)))
    seconds = {"forward": 0.0, "grad_input": 0.0, "grad_kernel": 0.0}
    gflop = 0.0
    for layer, x, n_fwd, n_kernel, n_input in jobs:
        t = _time_kernels(layer, x, runs)
        flop = _conv_flop(layer, x.shape) / 1e9
        seconds["forward"] += n_fwd * t["forward"]
        seconds["grad_kernel"] += n_kernel * t["grad_kernel"]
        seconds["grad_input"] += n_input * t["grad_input"]
        gflop += (n_fwd + n_kernel + n_input) * flop
    total = sum(seconds.values())
    rates = {}
    for kind in seconds:
        kind_flop = sum(_conv_flop(layer, x.shape) / 1e9 * {"forward": f, "grad_kernel": k,
                                                            "grad_input": i}[kind]
                        for layer, x, f, k, i in jobs)
        rates[kind] = round(kind_flop / seconds[kind], 1) if seconds[kind] else None
    return {
        "conv_s": round(total, 4),
        "conv_s_by_kind": {k: round(v, 4) for k, v in seconds.items()},
        "conv_gflop_per_s_by_kind": rates,
        "counted_gflop_per_image": round(gflop / batch_size, 3),
        "conv_gflop_per_s": round(gflop / total, 1),
        "fraction_of_peak_if_only_convolutions": (round(gflop / total / peak_gflop_per_s, 3)
                                                  if peak_gflop_per_s else None),
        "timing": f"each kernel alone, best of {runs} after a warm-up, summed as often as "
                  "the step runs it",
    }
