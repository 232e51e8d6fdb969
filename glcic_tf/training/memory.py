"""Will one training step fit? A memory estimate per replica, checked before the first step.

The estimate of a training step's peak memory per replica (phase 3, the largest: the
completion network and both discriminators, forward and backward) is

    runtime + state + activations, where
    state       = 4 bytes x (parameters of C and D) x PARAMETER_COPIES (weights, gradients,
                  two optimizer slots, the step's temporaries)
    activations = ACTIVATION_BYTES x width x crop side^2 x micro-batch (x MIXED_FACTOR in mixed
                  precision)

with `runtime` (TensorFlow, Keras, the input pipeline; host memory only), PARAMETER_COPIES
and ACTIVATION_BYTES calibrated by measuring peak resident memory of real phase-3 steps
(`python -m glcic_tf.benchmarks.train_memory`, which also prints the estimate beside each
measurement; the figures are in docs/training_memory.md). Activations grow with the width
(channels) and the pixels; the parameter count comes from the networks' Table 1 and 2 shapes at
the config's width (no network is built).

`plan(config, replicas, available)` compares the estimate with the memory each replica has:
host RAM available (`MemAvailable` of /proc/meminfo, shared by CPU replicas) or, for GPUs, the
device's memory (`nvidia-smi`; where it cannot be read the check is skipped with a message:
GPU paths are untested here) and returns what to do: run, run with gradient accumulation
(`--accumulate auto`: the smallest N dividing the per-replica batch whose micro-batch fits), or
refuse with the flags that would fit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess

GIB = 2 ** 30
# Calibrated against measured peaks of phase-3 steps (`python -m glcic_tf.benchmarks.train_memory`;
# the cases, the fit and the machine: docs/training_memory.md).
ACTIVATION_BYTES = 4_640.0  # per pixel of the crop, per image, per unit of width (phase 3)
RUNTIME_BYTES = 853 * 2 ** 20  # TensorFlow + Keras + tf.data on the host (not on a GPU)
# Copies of the parameters alive at the peak: weights, gradients, two optimizer slots and the
# step's temporaries.
PARAMETER_COPIES = 9
# Activations in mixed precision relative to float32 (Keras keeps float32 copies on a CPU).
MIXED_FACTOR = 1.0
# Use at most this share of the available memory (the rest for the OS, fragmentation, peaks).
HEADROOM = 0.85
EXIT_DOES_NOT_FIT = 3


class DoesNotFit(RuntimeError):
    """The step does not fit; the message names the estimate, the memory and what would fit."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    runtime: float
    state: float
    activations: float

    @property
    def total(self) -> float:
        return self.runtime + self.state + self.activations


@dataclasses.dataclass(frozen=True)
class Plan:
    accumulate: int  # micro-batches per step to use
    estimate: Estimate  # at that micro-batch
    available: float | None  # bytes per replica (None: unknown, check skipped)
    message: str


@functools.lru_cache(maxsize=None)
def parameter_count(width: float, image_size: int, local_size: int) -> int:
    """Trainable parameters of the completion network and the context discriminator, from
    Table 1 and 2's shapes (`glcic_tf.networks.models`' tables) at this width: no network is
    built."""
    from glcic_tf.networks import models

    total, cin = 0, 4  # RGB + mask
    for name, _, kernel, _, _, filters in models.COMPLETION_LAYERS:
        cout = 3 if name == "output_conv" else models.scaled(filters, width)
        total += kernel * kernel * cin * cout + cout + (0 if name == "output_conv" else 2 * cout)
        cin = cout
    fc = models.scaled(models.FC_UNITS, width)
    for side, filters in ((image_size, models.GLOBAL_FILTERS), (local_size, models.LOCAL_FILTERS)):
        cin = 3
        for f in filters:
            cout = models.scaled(f, width)
            total += 25 * cin * cout + 3 * cout  # kernel, bias, batch-norm scale and offset
            cin, side = cout, -(-side // 2)
        total += side * side * cin * fc + fc
    return total + 2 * fc + 1


def estimate(config, micro_batch: int, *, device: str = "cpu") -> Estimate:
    """The peak memory of one phase-3 step per replica, for `micro_batch` images."""
    width, size = config.model.width, config.data.image_size
    params = parameter_count(width, size, config.masks.local_size)
    activations = ACTIVATION_BYTES * width * size * size * micro_batch
    if config.precision != "float32":
        activations *= MIXED_FACTOR
    runtime = RUNTIME_BYTES if device == "cpu" else 0.0
    return Estimate(runtime, 4.0 * PARAMETER_COPIES * params, activations)


def host_available_bytes() -> float | None:
    """MemAvailable of /proc/meminfo (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_total_bytes() -> float | None:
    """The smallest GPU's memory from nvidia-smi (None without it). Untested here: no GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
        values = [float(v) for v in out.split()]
        return min(values) * 2 ** 20 if values else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def plan(config, replicas: int, available: float | None, *, device: str = "cpu",
         auto: bool = False) -> Plan:
    """What to run: `config`'s own accumulation, more of it (`auto`), or DoesNotFit.

    Args:
      config: the resolved GLCICConfig (global batch `schedule.batch_size`).
      replicas: replicas in sync (the global batch is split over them).
      available: bytes each replica may use (CPU replicas share the host: pass the host's
        available memory divided by the replicas), None = unknown (the check is skipped).
      device: "cpu" (host memory, runtime included) or "gpu" (device memory).
      auto: choose the smallest accumulation that fits instead of refusing.

    Raises:
      DoesNotFit: not even one image per micro-batch fits, or it does not fit and not `auto`.
    """
    sched = config.schedule
    per_replica = sched.batch_size // max(replicas, 1)
    current = sched.accumulate
    here = estimate(config, per_replica // current, device=device)
    if available is None:
        return Plan(current, here, None, "memory check skipped: the memory available to each "
                    "replica is unknown")
    budget = HEADROOM * available
    fixed = estimate(config, 0, device=device).total
    per_image = estimate(config, 1, device=device).total - fixed
    largest = math.floor((budget - fixed) / per_image) if budget > fixed else 0  # images

    if per_replica // current <= largest:
        return Plan(current, here, available,
                    f"memory: a step needs about {_gib(here.total)} per replica, "
                    f"{_gib(available)} available")
    options = [n for n in range(current, per_replica + 1)
               if per_replica % n == 0 and n % current == 0 and per_replica // n <= largest]
    # A smaller batch with the same accumulation: micro-batches of at most `largest` images.
    batches = [largest * current] if largest >= 1 else []
    what = (f"{'the paper preset: ' if config.name == 'paper' else ''}batch {sched.batch_size} "
            f"({per_replica} per replica{f', {current} micro-batches' if current > 1 else ''}) "
            f"at {config.data.image_size} px, width {config.model.width:g}, "
            f"{config.precision}: a training step needs about {_gib(here.total)} per replica "
            f"(activations {_gib(here.activations)}, weights and optimizer state "
            f"{_gib(here.state)}, runtime {_gib(here.runtime)}), but "
            f"{_gib(available)} is available ({HEADROOM:.0%} of it usable)")
    if not options and not batches:
        raise DoesNotFit(f"{what}; even one image per step does not fit: use a smaller "
                         f"--image-size or --width, or a machine with more memory")
    if auto and options:
        n = options[0]
        chosen = estimate(config, per_replica // n, device=device)
        return Plan(n, chosen, available,
                    f"memory: --accumulate auto chose {n} micro-batches of "
                    f"{per_replica // n} per replica (about {_gib(chosen.total)} each, "
                    f"{_gib(available)} available). The global batch stays "
                    f"{sched.batch_size} and each update averages all of it, but batch "
                    f"normalization computes its statistics over each micro-batch of "
                    f"{per_replica // n}, not over the whole batch (noisier statistics for small "
                    f"micro-batches; `schedule.accumulate` in the run's config.json records N)")
    fixes = []
    if options:
        fixes.append(f"--accumulate {options[0]} (same global batch, {options[0]} micro-batches "
                     f"of {per_replica // options[0]}) or --accumulate auto")
    if batches:
        fixes.append(f"--batch-size {batches[0] * max(replicas, 1)} (the largest batch that "
                     f"fits)")
    raise DoesNotFit(f"{what}. It would fit with " + ", or ".join(fixes)
                     + "; --no-memory-check skips this check")


def available_per_replica(strategy) -> tuple[float | None, str]:
    """(bytes each replica may use, "cpu" or "gpu") for a tf.distribute strategy."""
    import tensorflow as tf

    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError, NotImplementedError):  # the default strategy
        gpus = tf.config.list_logical_devices("GPU")
        devices = [gpus[0].name] if gpus else ["/cpu:0"]
    if any("GPU" in d.upper() for d in devices):
        return gpu_total_bytes(), "gpu"
    host = host_available_bytes()
    # CPU replicas (logical devices of one host) share its memory.
    return (host / max(len(devices), 1) if host is not None else None), "cpu"
