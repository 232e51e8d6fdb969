"""The six sections of a config, one frozen dataclass per concern: data, masks, model, loss,
optimizer, schedule; with the values each field allows, the default mean pixel value, and
`ConfigError`.

Every section's `validate()` checks its own fields and raises a `ConfigError` that repeats what
was received; checks across sections (the local patch against the crop, the output against the
input convention) are `GLCICConfig.validate`'s (`glcic_tf.config.experiment`).
"""

from __future__ import annotations

import dataclasses

# Mean pixel value (RGB in [0, 1]) used to fill holes until a dataset's own value is known.
# `pipelines/make_tfrecords.py` computes the training split's mean and writes it to
# `dataset_info.json`; training and inference then use that value (see `with_mean_pixel`).
DEFAULT_MEAN_PIXEL = (0.4560, 0.4472, 0.4155)

INPUT_CONVENTIONS = ("mean_fill", "torch7")
MASK_KINDS = ("rect", "freeform", "mixed")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PADDINGS = ("same", "torch")
LOCAL_PATCHES = ("centred", "containing")
REAL_LOCAL_PATCHES = ("own_random", "same_as_fake")
GENERATOR_GANS = ("saturating", "non_saturating")
RECONSTRUCTIONS = ("mse", "l1")
INITIALIZERS = ("torch", "keras")
OUTPUTS = ("sigmoid", "harmonic_residual")
OPTIMIZERS = ("adadelta", "adam")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def ensure(condition: bool, message: str) -> None:
    """Raises ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training input: the paper's augmentation and the hole fill value.

    Attributes:
      image_size: side of the square training crop (paper: 256). Multiple of 4.
      resize_min, resize_max: the shorter image side is resized to a uniform random size in
        [resize_min, resize_max] keeping the aspect ratio, then cropped (paper: 256, 384).
      random_flip: random horizontal flip (not in the paper; off by default).
      mean_pixel: RGB mean of the training set in [0, 1]; holes are filled with it.
      input_convention: how the network sees the hole. "mean_fill": RGB in [0, 1] with hole
        pixels set to `mean_pixel` (this implementation's training convention). "torch7": RGB
        minus `mean_pixel` with hole pixels set to 0, as the authors' released Torch7 models
        expect (identical information, shifted by the mean).
      shuffle_buffer: examples held by the shuffle buffer.
      deterministic: fixed element order for tests and reproducible runs.
      seed: seed for file shuffling, augmentation and masks when deterministic.
      skip_corrupt: skip (and count) records that fail to parse or decode instead of failing.
    """

    image_size: int = 256
    resize_min: int = 256
    resize_max: int = 384
    random_flip: bool = False
    mean_pixel: tuple[float, float, float] = DEFAULT_MEAN_PIXEL
    input_convention: str = "mean_fill"
    shuffle_buffer: int = 2048
    deterministic: bool = False
    seed: int = 0
    skip_corrupt: bool = False

    def validate(self) -> None:
        ensure(self.image_size > 0 and self.image_size % 4 == 0,
               f"data.image_size must be a positive multiple of 4, got {self.image_size}")
        ensure(self.resize_min >= self.image_size,
               f"data.resize_min ({self.resize_min}) must be >= data.image_size "
               f"({self.image_size}) so that a crop of image_size fits")
        ensure(self.resize_max >= self.resize_min,
               f"data.resize_max ({self.resize_max}) must be >= data.resize_min "
               f"({self.resize_min})")
        ensure(len(self.mean_pixel) == 3 and all(0.0 <= v <= 1.0 for v in self.mean_pixel),
               f"data.mean_pixel must be 3 values in [0, 1], got {self.mean_pixel}")
        ensure(self.input_convention in INPUT_CONVENTIONS,
               f"data.input_convention must be one of {INPUT_CONVENTIONS}, "
               f"got {self.input_convention!r}")
        ensure(self.shuffle_buffer >= 1,
               f"data.shuffle_buffer must be >= 1, got {self.shuffle_buffer}")


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Holes and the local discriminator's patch.

    Attributes:
      local_size: side of the local patch the local discriminator sees (paper: 128).
      hole_min, hole_max: each rectangle side is uniform in [hole_min, hole_max] (paper: 96, 128).
      num_holes: rectangles per image; the local patch contains the first one.
      kind: "rect" (the paper), "freeform" (strokes, as the authors' 2020 model) or "mixed".
      freeform_ratio: with kind="mixed", the probability that an example gets strokes.
      max_strokes, stroke_width_min, stroke_width_max: free-form stroke parameters (pixels at
        `data.image_size`; strokes are drawn inside the local patch).
      mask_files: the user's own masks (see `glcic_tf.data.mask_sets`): a glob of mask images
        (PNG/JPEG/GIF/BMP, any size and mode; luminance >= 0.5 is a hole) or of mask TFRecords
        (feature `mask/encoded`). Empty: none. Used for training with `mask_file_ratio` > 0
        and by `data.make_eval_dataset(mask_kind="file")`.
      mask_file_ratio: probability that a training example takes a mask from `mask_files`
        (randomly flipped, rotated by a multiple of 90 degrees and cropped); the others get
        holes of `kind`. 0 = never, 1 = always.
      mask_file_invert: the mask files mark holes in black instead of white.
      local_patch: where the local discriminator's patch lies around the hole. "centred"
        (the paper: "a 128x128 patch centred on the completed region"), shifted inwards where
        it would leave the image; "containing": uniform among the positions that contain the
        hole (this implementation before 2026-12; kept for runs trained with it).
    """

    local_size: int = 128
    hole_min: int = 96
    hole_max: int = 128
    num_holes: int = 1
    kind: str = "rect"
    freeform_ratio: float = 0.5
    max_strokes: int = 4
    stroke_width_min: int = 8
    stroke_width_max: int = 20
    mask_files: str = ""
    mask_file_ratio: float = 0.0
    mask_file_invert: bool = False
    local_patch: str = "centred"

    def validate(self) -> None:
        ensure(self.local_patch in LOCAL_PATCHES,
               f"masks.local_patch must be one of {LOCAL_PATCHES}, got {self.local_patch!r}")
        ensure(self.local_size > 0, f"masks.local_size must be > 0, got {self.local_size}")
        ensure(0 < self.hole_min <= self.hole_max,
               f"masks.hole_min/hole_max must satisfy 0 < hole_min <= hole_max, "
               f"got {self.hole_min}, {self.hole_max}")
        ensure(self.hole_max <= self.local_size,
               f"masks.hole_max ({self.hole_max}) is larger than the local patch "
               f"masks.local_size ({self.local_size}): the local discriminator could not see "
               f"the whole hole")
        ensure(self.num_holes >= 1, f"masks.num_holes must be >= 1, got {self.num_holes}")
        ensure(self.kind in MASK_KINDS,
               f"masks.kind must be one of {MASK_KINDS}, got {self.kind!r}")
        ensure(0.0 <= self.freeform_ratio <= 1.0,
               f"masks.freeform_ratio must be in [0, 1], got {self.freeform_ratio}")
        ensure(self.max_strokes >= 1, f"masks.max_strokes must be >= 1, got {self.max_strokes}")
        ensure(0 < self.stroke_width_min <= self.stroke_width_max,
               f"masks.stroke_width_min/max must satisfy 0 < min <= max, got "
               f"{self.stroke_width_min}, {self.stroke_width_max}")
        ensure(0.0 <= self.mask_file_ratio <= 1.0,
               f"masks.mask_file_ratio must be in [0, 1], got {self.mask_file_ratio}")
        ensure(self.mask_file_ratio == 0.0 or self.mask_files.strip() != "",
               f"masks.mask_file_ratio is {self.mask_file_ratio} but masks.mask_files is empty: "
               f"give a glob of mask images or mask TFRecords (e.g. 'masks/*.png')")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The two networks.

    Attributes:
      width: channel multiplier for fast tests and small demos (1.0 = the paper). It scales
        channel counts, never the layer structure.
      sync_batch_norm: synchronise batch-norm statistics across replicas (needed so that N
        replicas compute the same update as one device on the same global batch).
      batch_norm_momentum, batch_norm_epsilon: Torch7's defaults (momentum 0.1 there is 0.9
        here; eps 1e-5), so imported official weights behave identically.
      padding: "same" (Keras: a 3x3 stride-2 convolution on an even input pads 0 before and 1
        after) or "torch" (symmetric, as Torch7's SpatialConvolution with pad (k-1)//2: the
        authors' released weights need it; see `glcic_tf.torch7.importer`). Only stride-2
        convolutions differ; parameter counts are identical.
      freeze_batch_norm: train with batch norm in inference mode (moving statistics, never
        updated), e.g. to fine-tune imported weights on small batches. Then N accumulated
        micro-batches give exactly the update of one batch N times the size.
      initializer: "torch": Torch7's default reset of every layer the authors' code used
        (convolution, full convolution and linear weights and biases uniform in
        +-1/sqrt(fan_in), batch-norm scale uniform in [0, 1], shift 0); the paper says
        nothing, so the `paper` preset takes its authors' framework default. "keras":
        glorot-uniform kernels, zero biases, batch-norm scale 1.
      output: the completion network's last step. "sigmoid" (the paper, Table 1): the
        convolutions see the hole filled with the mean pixel value and the output is a
        sigmoid. "harmonic_residual" (not in the paper; CPU presets): the hole is first filled
        with a smooth harmonic fill of its border (`glcic_tf.networks.fill`, stock TF ops), the
        convolutions see that fill, and the output is sigmoid(logit(fill) + r) with the last
        convolution r initialised to zero, so an untrained network already returns the fill
        and training only learns a correction. Same layers and parameter count.
    """

    width: float = 1.0
    sync_batch_norm: bool = False
    batch_norm_momentum: float = 0.9
    batch_norm_epsilon: float = 1e-5
    padding: str = "same"
    freeze_batch_norm: bool = False
    initializer: str = "torch"
    output: str = "sigmoid"

    def validate(self) -> None:
        ensure(self.initializer in INITIALIZERS,
               f"model.initializer must be one of {INITIALIZERS}, got {self.initializer!r}")
        ensure(self.output in OUTPUTS,
               f"model.output must be one of {OUTPUTS}, got {self.output!r}")
        ensure(0.0 < self.width <= 4.0, f"model.width must be in (0, 4], got {self.width}")
        ensure(0.0 <= self.batch_norm_momentum < 1.0,
               f"model.batch_norm_momentum must be in [0, 1), got {self.batch_norm_momentum}")
        ensure(self.batch_norm_epsilon > 0,
               f"model.batch_norm_epsilon must be > 0, got {self.batch_norm_epsilon}")
        ensure(self.padding in PADDINGS,
               f"model.padding must be one of {PADDINGS}, got {self.padding!r}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Joint loss: reconstruction + alpha * GAN (paper: MSE, alpha = 0.0004, Eq. 2-3).

    Attributes:
      alpha: weight of C's GAN term.
      generator_gan: C's GAN term. "saturating": log(1 - D(C(x))), as Eq. 2 writes it;
        "non_saturating": -log D(C(x)) (Goodfellow et al. 2014's practical variant, which
        most GAN code uses; this implementation before 2026-12).
      discriminator_alpha: multiply D's loss by alpha too, as Eq. 2 reads (alpha multiplies
        both log terms). False: plain binary cross-entropy, as Algorithm 1 reads ("update the
        discriminator D with the binary cross entropy loss"). With ADADELTA the two differ
        (its epsilon makes the update depend on the gradient's scale when it is small);
        GLCIC-PyTorch uses alpha * (real + fake) / 2.
      real_local_patch: where the local discriminator looks at a real image. "own_random":
        the patch of a random mask of its own (Eq. 2 and Algorithm 1: D sees real images
        with their own random masks M_d); "same_as_fake": the completed image's patch
        (this implementation before 2026-12).
      reconstruction: C's reconstruction term. "mse": the paper's weighted MSE
        ||M * (C(x, M) - x)||^2; "l1": mean absolute error inside the hole (not in the
        paper; the CPU preset's choice, since it is scored by hole L1).
    """

    alpha: float = 0.0004
    generator_gan: str = "saturating"
    discriminator_alpha: bool = False
    real_local_patch: str = "own_random"
    reconstruction: str = "mse"

    def validate(self) -> None:
        ensure(self.alpha >= 0, f"loss.alpha must be >= 0, got {self.alpha}")
        ensure(self.generator_gan in GENERATOR_GANS,
               f"loss.generator_gan must be one of {GENERATOR_GANS}, got {self.generator_gan!r}")
        ensure(self.real_local_patch in REAL_LOCAL_PATCHES,
               f"loss.real_local_patch must be one of {REAL_LOCAL_PATCHES}, "
               f"got {self.real_local_patch!r}")
        ensure(self.reconstruction in RECONSTRUCTIONS,
               f"loss.reconstruction must be one of {RECONSTRUCTIONS}, "
               f"got {self.reconstruction!r}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """ADADELTA for both networks, as in the paper.

    ADADELTA (Zeiler 2012) sets per-parameter step sizes itself; its update has no learning rate,
    which is `learning_rate=1.0` in Keras. Keras' default of 0.001 scales every step down 1000x
    and barely moves the networks, so it is not the default here. The paper gives no rho or
    epsilon: the defaults are the authors' framework's (Torch7 `optim.adadelta`: rho 0.9,
    eps 1e-6; Keras 3's update with learning rate 1.0 is otherwise the same). Runs saved before
    2026-12 stored rho 0.95 and keep it.

    Attributes:
      name: "adadelta" (the paper) or "adam" (not in the paper; converges several times
        faster in wall-clock time on a CPU budget, see `photos128`).
      beta_1, beta_2: Adam's moment decay rates, per network (`_discriminator` for D).
    """

    learning_rate_completion: float = 1.0
    learning_rate_discriminator: float = 1.0
    rho: float = 0.9
    epsilon: float = 1e-6
    name: str = "adadelta"
    beta_1: float = 0.9
    beta_2: float = 0.999
    beta_1_discriminator: float = 0.5

    def validate(self) -> None:
        ensure(self.name in OPTIMIZERS,
               f"optimizer.name must be one of {OPTIMIZERS}, got {self.name!r}")
        ensure(self.name != "adam" or max(self.learning_rate_completion,
                                          self.learning_rate_discriminator) <= 0.1,
               f"optimizer.name is 'adam' but the learning rates are "
               f"{self.learning_rate_completion} / {self.learning_rate_discriminator}: 1.0 is "
               f"ADADELTA's (no-op) rate; give Adam's, e.g. 4e-4, with "
               f"optimizer.learning_rate_completion / _discriminator")
        for key in ("beta_1", "beta_2", "beta_1_discriminator"):
            value = getattr(self, key)
            ensure(0.0 <= value < 1.0, f"optimizer.{key} must be in [0, 1), got {value}")
        ensure(self.learning_rate_completion > 0,
               f"optimizer.learning_rate_completion must be > 0, "
               f"got {self.learning_rate_completion}")
        ensure(self.learning_rate_discriminator > 0,
               f"optimizer.learning_rate_discriminator must be > 0, "
               f"got {self.learning_rate_discriminator}")
        ensure(0.0 < self.rho < 1.0, f"optimizer.rho must be in (0, 1), got {self.rho}")
        ensure(self.epsilon > 0, f"optimizer.epsilon must be > 0, got {self.epsilon}")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The paper's three phases and the run's bookkeeping.

    Attributes:
      batch_size: global batch size, split across replicas (paper: 96).
      steps_completion: T_C, completion network alone with the MSE loss (paper: 90,000).
      steps_discriminator: T_D, discriminator alone (paper: 10,000).
      steps_joint: both networks, MSE + alpha * GAN (paper: 400,000 = T_train - T_C - T_D;
        the paper's T_train = 500,000 is the total, Algorithm 1 runs while t < T_train).
      checkpoint_every: save a checkpoint every this many steps (and at phase boundaries).
      keep_checkpoints: how many checkpoints CheckpointManager keeps.
      log_every: TensorBoard scalars every this many steps.
      image_every: TensorBoard image grid every this many steps.
      accumulate: split each (per-replica) batch into this many micro-batches and sum their
        gradients before one optimizer step, so a small accelerator trains with the paper's
        batch of 96. Identical to the large batch except batch-norm statistics, which are
        computed per micro-batch (see `model.freeze_batch_norm`).
      eval_every: every this many steps, score held-out crops with fixed holes (the val split)
        and log `eval/hole_l1` and `eval/psnr` to TensorBoard and `eval_curve.jsonl`, beside
        the constant figures of OpenCV Telea and Navier-Stokes on the same holes
        (`glcic_tf.evaluation.curve`). 0: never.
      eval_images: held-out images scored at each of those points (each with one rectangle
        and one free-form hole).
    """

    batch_size: int = 96
    steps_completion: int = 90_000
    steps_discriminator: int = 10_000
    steps_joint: int = 400_000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    log_every: int = 100
    image_every: int = 1000
    accumulate: int = 1
    eval_every: int = 0
    eval_images: int = 64

    @property
    def total_steps(self) -> int:
        return self.steps_completion + self.steps_discriminator + self.steps_joint

    def validate(self) -> None:
        ensure(self.batch_size >= 1, f"schedule.batch_size must be >= 1, got {self.batch_size}")
        for name in ("steps_completion", "steps_discriminator", "steps_joint"):
            value = getattr(self, name)
            ensure(value >= 0, f"schedule.{name} must be >= 0, got {value}")
        ensure(self.total_steps > 0, "schedule: the three phases add up to 0 steps")
        ensure(self.accumulate >= 1, f"schedule.accumulate must be >= 1, got {self.accumulate}")
        ensure(self.batch_size % self.accumulate == 0,
               f"schedule.batch_size ({self.batch_size}) must be a multiple of "
               f"schedule.accumulate ({self.accumulate})")
        ensure(self.eval_every >= 0, f"schedule.eval_every must be >= 0, got {self.eval_every}")
        ensure(self.eval_images >= 1,
               f"schedule.eval_images must be >= 1, got {self.eval_images}")
        for name in ("checkpoint_every", "keep_checkpoints", "log_every", "image_every"):
            value = getattr(self, name)
            ensure(value >= 1, f"schedule.{name} must be >= 1, got {value}")
