"""Typed, frozen configuration for glcic_tf, with the paper's values as defaults.

One frozen dataclass per concern (data, masks, model, loss, optimizer, schedule) grouped under
`GLCICConfig`. Builders receive their own sub-config, never the whole tree. Named presets are
functions registered with `register_preset`; `get_preset("paper")` and `get_preset("demo")` ship.

Overrides are dotted keys (`"schedule.batch_size": 4`) applied with `override()`, which rejects
unknown keys and values of the wrong type. `to_json()` / `from_json()` round-trip exactly; the
resolved config is written beside every checkpoint and into every export's `assets/`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Callable, Mapping

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

# Fields added after runs had already been saved: a saved config that lacks one of them was
# trained with the behaviour on the right (the code before the field existed), so loading it
# restores that behaviour rather than the new default (the paper's reading).
LEGACY_DEFAULTS = {
    "masks.local_patch": "containing",
    "loss.real_local_patch": "same_as_fake",
    "loss.generator_gan": "non_saturating",
    "loss.discriminator_alpha": False,
    "loss.reconstruction": "mse",
    "model.initializer": "keras",
    "model.output": "sigmoid",
    "optimizer.name": "adadelta",
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def _check(condition: bool, message: str) -> None:
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
        _check(self.image_size > 0 and self.image_size % 4 == 0,
               f"data.image_size must be a positive multiple of 4, got {self.image_size}")
        _check(self.resize_min >= self.image_size,
               f"data.resize_min ({self.resize_min}) must be >= data.image_size "
               f"({self.image_size}) so that a crop of image_size fits")
        _check(self.resize_max >= self.resize_min,
               f"data.resize_max ({self.resize_max}) must be >= data.resize_min "
               f"({self.resize_min})")
        _check(len(self.mean_pixel) == 3 and all(0.0 <= v <= 1.0 for v in self.mean_pixel),
               f"data.mean_pixel must be 3 values in [0, 1], got {self.mean_pixel}")
        _check(self.input_convention in INPUT_CONVENTIONS,
               f"data.input_convention must be one of {INPUT_CONVENTIONS}, "
               f"got {self.input_convention!r}")
        _check(self.shuffle_buffer >= 1,
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
      mask_files: the user's own masks (see `glcic_tf.mask_sets`): a glob of mask images
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
        _check(self.local_patch in LOCAL_PATCHES,
               f"masks.local_patch must be one of {LOCAL_PATCHES}, got {self.local_patch!r}")
        _check(self.local_size > 0, f"masks.local_size must be > 0, got {self.local_size}")
        _check(0 < self.hole_min <= self.hole_max,
               f"masks.hole_min/hole_max must satisfy 0 < hole_min <= hole_max, "
               f"got {self.hole_min}, {self.hole_max}")
        _check(self.hole_max <= self.local_size,
               f"masks.hole_max ({self.hole_max}) is larger than the local patch "
               f"masks.local_size ({self.local_size}): the local discriminator could not see "
               f"the whole hole")
        _check(self.num_holes >= 1, f"masks.num_holes must be >= 1, got {self.num_holes}")
        _check(self.kind in MASK_KINDS,
               f"masks.kind must be one of {MASK_KINDS}, got {self.kind!r}")
        _check(0.0 <= self.freeform_ratio <= 1.0,
               f"masks.freeform_ratio must be in [0, 1], got {self.freeform_ratio}")
        _check(self.max_strokes >= 1, f"masks.max_strokes must be >= 1, got {self.max_strokes}")
        _check(0 < self.stroke_width_min <= self.stroke_width_max,
               f"masks.stroke_width_min/max must satisfy 0 < min <= max, got "
               f"{self.stroke_width_min}, {self.stroke_width_max}")
        _check(0.0 <= self.mask_file_ratio <= 1.0,
               f"masks.mask_file_ratio must be in [0, 1], got {self.mask_file_ratio}")
        _check(self.mask_file_ratio == 0.0 or self.mask_files.strip() != "",
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
        authors' released weights need it; see `glcic_tf.torch7`). Only stride-2
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
        with a smooth harmonic fill of its border (`glcic_tf.fill`, stock TF ops), the
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
        _check(self.initializer in INITIALIZERS,
               f"model.initializer must be one of {INITIALIZERS}, got {self.initializer!r}")
        _check(self.output in OUTPUTS,
               f"model.output must be one of {OUTPUTS}, got {self.output!r}")
        _check(0.0 < self.width <= 4.0, f"model.width must be in (0, 4], got {self.width}")
        _check(0.0 <= self.batch_norm_momentum < 1.0,
               f"model.batch_norm_momentum must be in [0, 1), got {self.batch_norm_momentum}")
        _check(self.batch_norm_epsilon > 0,
               f"model.batch_norm_epsilon must be > 0, got {self.batch_norm_epsilon}")
        _check(self.padding in PADDINGS,
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
        _check(self.alpha >= 0, f"loss.alpha must be >= 0, got {self.alpha}")
        _check(self.generator_gan in GENERATOR_GANS,
               f"loss.generator_gan must be one of {GENERATOR_GANS}, got {self.generator_gan!r}")
        _check(self.real_local_patch in REAL_LOCAL_PATCHES,
               f"loss.real_local_patch must be one of {REAL_LOCAL_PATCHES}, "
               f"got {self.real_local_patch!r}")
        _check(self.reconstruction in RECONSTRUCTIONS,
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
        _check(self.name in OPTIMIZERS,
               f"optimizer.name must be one of {OPTIMIZERS}, got {self.name!r}")
        _check(self.name != "adam" or max(self.learning_rate_completion,
                                          self.learning_rate_discriminator) <= 0.1,
               f"optimizer.name is 'adam' but the learning rates are "
               f"{self.learning_rate_completion} / {self.learning_rate_discriminator}: 1.0 is "
               f"ADADELTA's (no-op) rate; give Adam's, e.g. 4e-4, with "
               f"optimizer.learning_rate_completion / _discriminator")
        for key in ("beta_1", "beta_2", "beta_1_discriminator"):
            value = getattr(self, key)
            _check(0.0 <= value < 1.0, f"optimizer.{key} must be in [0, 1), got {value}")
        _check(self.learning_rate_completion > 0,
               f"optimizer.learning_rate_completion must be > 0, "
               f"got {self.learning_rate_completion}")
        _check(self.learning_rate_discriminator > 0,
               f"optimizer.learning_rate_discriminator must be > 0, "
               f"got {self.learning_rate_discriminator}")
        _check(0.0 < self.rho < 1.0, f"optimizer.rho must be in (0, 1), got {self.rho}")
        _check(self.epsilon > 0, f"optimizer.epsilon must be > 0, got {self.epsilon}")


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
        (`glcic_tf.eval_curve`). 0: never.
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
        _check(self.batch_size >= 1, f"schedule.batch_size must be >= 1, got {self.batch_size}")
        for name in ("steps_completion", "steps_discriminator", "steps_joint"):
            value = getattr(self, name)
            _check(value >= 0, f"schedule.{name} must be >= 0, got {value}")
        _check(self.total_steps > 0, "schedule: the three phases add up to 0 steps")
        _check(self.accumulate >= 1, f"schedule.accumulate must be >= 1, got {self.accumulate}")
        _check(self.batch_size % self.accumulate == 0,
               f"schedule.batch_size ({self.batch_size}) must be a multiple of "
               f"schedule.accumulate ({self.accumulate})")
        _check(self.eval_every >= 0, f"schedule.eval_every must be >= 0, got {self.eval_every}")
        _check(self.eval_images >= 1,
               f"schedule.eval_images must be >= 1, got {self.eval_images}")
        for name in ("checkpoint_every", "keep_checkpoints", "log_every", "image_every"):
            value = getattr(self, name)
            _check(value >= 1, f"schedule.{name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class GLCICConfig:
    """The whole experiment. `validate()` checks every part and their consistency."""

    name: str = "paper"
    data: DataConfig = DataConfig()
    masks: MaskConfig = MaskConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    precision: str = "float32"
    jit_compile: bool = False
    seed: int = 0

    def validate(self) -> "GLCICConfig":
        for part in (self.data, self.masks, self.model, self.loss, self.optimizer,
                     self.schedule):
            part.validate()
        _check(self.masks.local_size <= self.data.image_size,
               f"masks.local_size ({self.masks.local_size}) must be <= data.image_size "
               f"({self.data.image_size})")
        _check(self.masks.local_size % 4 == 0,
               f"masks.local_size must be a multiple of 4, got {self.masks.local_size}")
        _check(self.precision in PRECISIONS,
               f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.model.output == "sigmoid" or self.data.input_convention == "mean_fill",
               f"model.output {self.model.output!r} needs data.input_convention 'mean_fill' "
               f"(the fill is computed from the image in [0, 1]), got "
               f"{self.data.input_convention!r}")
        return self

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GLCICConfig":
        """From a dict such as `to_dict()` gives; keys missing from a section added later take
        their `LEGACY_DEFAULTS` value (what runs saved without them were trained with)."""
        return _from_dict(cls, _with_legacy_defaults(values), prefix="").validate()

    @classmethod
    def from_json(cls, text: str) -> "GLCICConfig":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"config JSON must be an object, got {type(values).__name__}")
        return cls.from_dict(values)

    def save(self, path: str) -> None:
        """Writes the config as JSON (any filesystem tf.io.gfile supports)."""
        import tensorflow as tf  # local import: keep `import glcic_tf.config` light

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> "GLCICConfig":
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise ConfigError(f"config file not found: {path}")
        with tf.io.gfile.GFile(path) as f:
            try:
                return cls.from_json(f.read())
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from e

    # --- convenience ---------------------------------------------------------------------------

    def override(self, overrides: Mapping[str, Any]) -> "GLCICConfig":
        return override(self, overrides)

    def with_mean_pixel(self, mean_pixel) -> "GLCICConfig":
        mean = tuple(float(v) for v in mean_pixel)
        return dataclasses.replace(
            self, data=dataclasses.replace(self.data, mean_pixel=mean)).validate()


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks (and, where lossless, converts) one JSON/CLI value against a field's type."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be an object, got {value!r}")
        return _from_dict(annotation, value, prefix=key + ".")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors) or f"{key}: unexpected value {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def _with_legacy_defaults(values: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(values, Mapping):
        return values
    out = dict(values)
    for dotted, legacy in LEGACY_DEFAULTS.items():
        section, key = dotted.split(".")
        part = out.get(section)
        if isinstance(part, Mapping) and key not in part:
            out[section] = {**part, key: legacy}
    return out


def _from_dict(cls, values: Mapping[str, Any], prefix: str):
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"valid keys under {prefix or 'the top level'}: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def override(config: GLCICConfig, overrides: Mapping[str, Any]) -> GLCICConfig:
    """Returns `config` with dotted-key overrides applied, e.g. {"schedule.batch_size": 8}.

    Raises:
      ConfigError: a key does not exist, a value has the wrong type, or the result is invalid.
    """
    values = config.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        node = values
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown config key {key!r} (no {'.'.join(parts[:i + 1])!r})")
            if i == len(parts) - 1:
                if isinstance(node[part], dict):
                    raise ConfigError(f"config key {key!r} is a section; override its fields")
                node[part] = value
            else:
                node = node[part]
    return GLCICConfig.from_dict(values)


# --- presets -----------------------------------------------------------------------------------

_PRESETS: dict[str, Callable[[], GLCICConfig]] = {}


def register_preset(fn: Callable[[], GLCICConfig]) -> Callable[[], GLCICConfig]:
    _PRESETS[fn.__name__] = fn
    return fn


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> GLCICConfig:
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {preset_names()}")
    return _PRESETS[name]().validate()


@register_preset
def paper() -> GLCICConfig:
    """The paper's setting: 256x256 crops, 96-128 px holes, batch 96, 90k/10k/400k steps.

    `python pipelines/train.py --data 'shards/train-*.tfrecord'`. The authors report about two
    months on four K80 GPUs for 500,000 steps on Places2; budget accordingly.
    """
    return GLCICConfig(name="paper")


@register_preset
def photos128() -> GLCICConfig:
    """The CPU preset: an inpainter that beats OpenCV on real photos in under an hour on 2 cores.

    128 px crops of photos resized to 128-192 px on the shorter side, 48-64 px rectangles and
    free-form strokes (half each), width 1/2, batch 16. Departures from the paper, each a config
    field whose default is the paper's (measured effects: docs/results.md):
    `model.output = "harmonic_residual"` (the network corrects a smooth fill instead of
    painting the hole from the mean colour), `loss.reconstruction = "l1"`, Adam instead of
    ADADELTA, and a schedule of 2,400 / 150 / 300 steps.

    `python pipelines/make_tfrecords.py --input 'photos/*.jpg' --output shards/photos
    --val-fraction 0.25`, then `python pipelines/train.py --preset photos128 --data
    'shards/photos-train-*' --out runs/photos128`: about 60 minutes on a 2-core AMD EPYC
    (Zen 4); the shipped `models/glcic_photos128` was trained so (see its model card).
    """
    return GLCICConfig(
        name="photos128",
        data=DataConfig(image_size=128, resize_min=128, resize_max=192, random_flip=True,
                        shuffle_buffer=512),
        masks=MaskConfig(local_size=64, hole_min=48, hole_max=64, kind="mixed",
                         freeform_ratio=0.5, max_strokes=4, stroke_width_min=6,
                         stroke_width_max=14),
        model=ModelConfig(width=0.5, output="harmonic_residual"),
        loss=LossConfig(reconstruction="l1", alpha=0.0004),
        optimizer=OptimizerConfig(name="adam", learning_rate_completion=5e-4,
                                  learning_rate_discriminator=2e-4, beta_1=0.9,
                                  beta_1_discriminator=0.5),
        schedule=ScheduleConfig(batch_size=16, steps_completion=2400, steps_discriminator=150,
                                steps_joint=300, checkpoint_every=300, keep_checkpoints=3,
                                log_every=50, image_every=300, eval_every=300),
    )


@register_preset
def demo() -> GLCICConfig:
    """A minute of fine-tuning of the shipped `photos128` network on the bundled sample photos.

    `python pipelines/train.py` (no arguments; `make demo`): warm-starts C from
    `models/glcic_photos128` (D starts fresh), runs all three phases (40 / 10 / 30 steps at
    batch 8, about 1-2 minutes on a 2-core CPU), checkpoints, logs to TensorBoard, exports and
    writes `preview.png` and `before_after.png` (a held-out sample photo with a hole, before
    and after). The architecture and scale are the shipped model's (width 1/2, 128 px crops);
    the learning rates are lower, so the minute adapts the network without undoing it.
    """
    base = photos128()
    return dataclasses.replace(
        base, name="demo",
        data=dataclasses.replace(base.data, shuffle_buffer=256),
        optimizer=dataclasses.replace(base.optimizer, learning_rate_completion=1e-4,
                                      learning_rate_discriminator=2e-4),
        schedule=ScheduleConfig(batch_size=8, steps_completion=40, steps_discriminator=10,
                                steps_joint=30, checkpoint_every=20, keep_checkpoints=3,
                                log_every=10, image_every=20, eval_every=0),
    )


@register_preset
def tiny() -> GLCICConfig:
    """A few steps of each phase at 64x64 and width 1/4: the pipeline end to end in seconds.

    For tests and smoke runs (`python pipelines/train.py --preset tiny`); the network it
    trains is not an inpainter (140 steps at a scale far below real photos, see
    docs/results.md). Before 2026-12 this was the `demo` preset.
    """
    return GLCICConfig(
        name="tiny",
        data=DataConfig(image_size=64, resize_min=64, resize_max=96, shuffle_buffer=256),
        masks=MaskConfig(local_size=32, hole_min=16, hole_max=28),
        model=ModelConfig(width=0.25),
        schedule=ScheduleConfig(batch_size=8, steps_completion=60, steps_discriminator=20,
                                steps_joint=60, checkpoint_every=20, keep_checkpoints=3,
                                log_every=10, image_every=20),
    )
