"""The paper's networks (Iizuka et al. 2017, Table 1 and Section 3), as Keras functional models.

* `completion_network`: 17 convolutional layers: an encoder that halves the resolution twice, four
  dilated convolutions (dilation 2, 4, 8, 16) that widen the receptive field to 299x299 pixels
  without losing resolution, and a decoder of two 4x4 stride-2 deconvolutions. BatchNorm + ReLU
  after every layer but the output, which is a sigmoid. Fully convolutional: any H and W that are
  multiples of 4.
* `global_discriminator` (whole 256x256 image, 6 convolutions + FC-1024), `local_discriminator`
  (128x128 patch around the hole, 5 convolutions + FC-1024) and `context_discriminator`, which
  concatenates their 1024-d outputs into 2048-d, then FC-1 and a sigmoid.

Layer names follow the paper (`conv1`, `dilated_conv_d8`, `deconv1`, `global_fc`, `concat_2048`
...), so checkpoints, TensorBoard graphs and exported SavedModels read like Table 1.

With `width=1.0` the completion network has 6,072,131 trainable parameters and the context
discriminator 45,063,681 (see `tests/networks/test_models.py` for the arithmetic). `width` scales
channel counts only, for fast tests and small demos; the layer structure never changes.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from glcic_tf.networks import fill as fill_lib
from glcic_tf.networks.batch_norm import FusedBatchNormalization
from glcic_tf.config import ModelConfig

# (name, kind, kernel, stride, dilation, filters) of the completion network, Table 1 of the paper.
COMPLETION_LAYERS = (
    ("conv1", "conv", 5, 1, 1, 64),
    ("conv2", "conv", 3, 2, 1, 128),
    ("conv3", "conv", 3, 1, 1, 128),
    ("conv4", "conv", 3, 2, 1, 256),
    ("conv5", "conv", 3, 1, 1, 256),
    ("conv6", "conv", 3, 1, 1, 256),
    ("dilated_conv_d2", "conv", 3, 1, 2, 256),
    ("dilated_conv_d4", "conv", 3, 1, 4, 256),
    ("dilated_conv_d8", "conv", 3, 1, 8, 256),
    ("dilated_conv_d16", "conv", 3, 1, 16, 256),
    ("conv7", "conv", 3, 1, 1, 256),
    ("conv8", "conv", 3, 1, 1, 256),
    ("deconv1", "deconv", 4, 2, 1, 128),
    ("conv9", "conv", 3, 1, 1, 128),
    ("deconv2", "deconv", 4, 2, 1, 64),
    ("conv10", "conv", 3, 1, 1, 32),
    ("output_conv", "conv", 3, 1, 1, 3),
)

# Output channels of the discriminators' 5x5 stride-2 convolutions (Table 2 of the paper).
GLOBAL_FILTERS = (64, 128, 256, 512, 512, 512)
LOCAL_FILTERS = (64, 128, 256, 512, 512)
FC_UNITS = 1024

# Batch-norm implementations: "fused" (`glcic_tf.networks.batch_norm`, TensorFlow's fused kernel
# where it is exact; the default) or "keras" (keras.layers.BatchNormalization). Same variables,
# same results up to float rounding; the choice only changes speed (see docs/training_speed.md).
BATCH_NORM_LAYERS = {"fused": FusedBatchNormalization,
                     "keras": layers.BatchNormalization}


def scaled(channels: int, width: float) -> int:
    """Channel count under the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def _check_width(width: float) -> None:
    if not (isinstance(width, (int, float)) and 0.0 < width <= 4.0):
        raise ValueError(f"width must be a number in (0, 4], got {width!r}")


@keras.saving.register_keras_serializable(package="glcic_tf")
class TorchUniform(keras.initializers.Initializer):
    """Torch7's default reset: uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)] for weights and
    biases alike, `fan_in` given explicitly (Keras would take a transposed convolution's output
    channels for its fan-in; Torch7 takes kW * kH * nInputPlane)."""

    def __init__(self, fan_in: int, seed=None):
        if int(fan_in) < 1:
            raise ValueError(f"fan_in must be >= 1, got {fan_in!r}")
        self.fan_in = int(fan_in)
        self.seed = seed
        self._uniform = keras.initializers.RandomUniform(
            -self.limit, self.limit, seed=seed)

    @property
    def limit(self) -> float:
        return 1.0 / math.sqrt(self.fan_in)

    def __call__(self, shape, dtype=None):
        return self._uniform(shape, dtype=dtype)

    def get_config(self):
        return {"fan_in": self.fan_in, "seed": self.seed}


def _initializers(config: ModelConfig, fan_in: int) -> dict:
    """kernel / bias initializers of a convolution or dense layer under `config.initializer`."""
    if config.initializer == "torch":
        return {"kernel_initializer": TorchUniform(fan_in),
                "bias_initializer": TorchUniform(fan_in)}
    return {}


def _check_batch_norm(batch_norm: str) -> None:
    if batch_norm not in BATCH_NORM_LAYERS:
        raise ValueError(f"batch_norm must be one of {sorted(BATCH_NORM_LAYERS)}, "
                         f"got {batch_norm!r}")


def _batch_norm(x, name: str, config: ModelConfig, batch_norm: str = "fused"):
    extra = {}
    if config.initializer == "torch":  # Torch7 nn.BatchNormalization: weight:uniform()
        extra["gamma_initializer"] = keras.initializers.RandomUniform(0.0, 1.0)
    return BATCH_NORM_LAYERS[batch_norm](
        momentum=config.batch_norm_momentum,
        epsilon=config.batch_norm_epsilon,
        synchronized=config.sync_batch_norm,
        name=f"{name}_bn",
        **extra,
    )(x)


@keras.saving.register_keras_serializable(package="glcic_tf")
class HarmonicFill(layers.Layer):
    """The image with its hole replaced by `fill.harmonic_fill` (no gradient flows through it).

    Inputs [image [B, H, W, 3] in [0, 1], mask [B, H, W, 1]]; output float32 like image.
    """

    def __init__(self, iterations: int = fill_lib.DEFAULT_ITERATIONS, **kwargs):
        super().__init__(**kwargs)
        self.iterations = int(iterations)

    def call(self, inputs):
        import tensorflow as tf

        image, mask = inputs
        image = tf.cast(image, tf.float32)
        return tf.stop_gradient(fill_lib.harmonic_fill(image, mask, self.iterations))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "iterations": self.iterations}


@keras.saving.register_keras_serializable(package="glcic_tf")
class ResidualSigmoid(layers.Layer):
    """sigmoid(logit(fill) + residual): the fill itself when the residual is 0, always in
    (0, 1). The fill is clipped to [`margin`, 1 - `margin`] before the logit."""

    def __init__(self, margin: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)

    def call(self, inputs):
        import tensorflow as tf

        base, residual = inputs
        base = tf.clip_by_value(tf.cast(base, tf.float32), self.margin, 1.0 - self.margin)
        logit = tf.math.log(base) - tf.math.log1p(-base)
        return tf.sigmoid(logit + tf.cast(residual, tf.float32))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def conv_bn_relu(x, filters: int, kernel: int, *, stride: int = 1, dilation: int = 1,
                 name: str, config: ModelConfig, transpose: bool = False,
                 batch_norm: str = "fused"):
    """Convolution (or 4x4 transposed convolution) + BatchNorm + ReLU, named `name*`.

    `batch_norm` picks the layer class from `BATCH_NORM_LAYERS` ("fused" or "keras").

    With `config.padding == "torch"` a strided convolution pads (k-1)//2 pixels on every side
    (`{name}_pad`, then a 'valid' convolution), as Torch7's SpatialConvolution does; Keras
    'same' would pad 0 before and 1 after on even inputs. Stride-1 convolutions with odd
    kernels and the 4x4 stride-2 transposed convolution (Torch SpatialFullConvolution with
    pad 1) are symmetric under 'same' already.
    """
    init = _initializers(config, kernel * kernel * int(x.shape[-1]))
    if transpose:
        x = layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same", name=name,
                                   **init)(x)
    elif config.padding == "torch" and stride > 1:
        p = (kernel - 1) // 2 * dilation
        x = layers.ZeroPadding2D(((p, p), (p, p)), name=f"{name}_pad")(x)
        x = layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation,
                          padding="valid", name=name, **init)(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation,
                          padding="same", name=name, **init)(x)
    x = _batch_norm(x, name, config, batch_norm)
    return layers.ReLU(name=f"{name}_relu")(x)


def completion_network(width: float = 1.0, config: ModelConfig | None = None, *,
                       dilations: tuple[int, int, int, int] = (2, 4, 8, 16),
                       name: str = "completion_network",
                       batch_norm: str = "fused") -> keras.Model:
    """Builds the completion network C.

    Args:
      width: channel multiplier (1.0 = the paper). Overrides `config.width` when a config is
        given and width differs from 1.0.
      config: batch-norm settings (momentum, epsilon, synchronized) and `padding`: "same"
        (default; Keras padding) or "torch" (strided convolutions pad symmetrically like
        Torch7, needed by the authors' released weights, see `glcic_tf.torch7.importer`; the two
        differ by a half-pixel shift after each stride-2 layer, parameters are identical).
        Defaults to ModelConfig().
      dilations: dilation rates of the four dilated layers; (1, 1, 1, 1) gives the
        non-dilated ablation of the paper (receptive field 91 instead of 299 pixels).
      name: model name.
      batch_norm: "fused" (`glcic_tf.networks.batch_norm.FusedBatchNormalization`) or "keras"
        (`keras.layers.BatchNormalization`): same variables and results, different speed.

    Returns:
      A functional keras.Model with inputs `image` (B, H, W, 3, holes already filled) and `mask`
      (B, H, W, 1, 1 = hole), H and W multiples of 4, and output `completion` (B, H, W, 3) in
      [0, 1] (float32 also under a mixed-precision policy).
    """
    config = config or ModelConfig()
    if config is not None and width == 1.0:
        width = config.width
    _check_width(width)
    _check_batch_norm(batch_norm)
    if len(dilations) != 4 or any(int(d) < 1 for d in dilations):
        raise ValueError(f"dilations must be 4 positive integers, got {dilations!r}")

    image = keras.Input(shape=(None, None, 3), name="image")
    mask = keras.Input(shape=(None, None, 1), name="mask")
    residual = config.output == "harmonic_residual"
    seen = HarmonicFill(dtype="float32", name="harmonic_fill")([image, mask]) if residual else image
    x = layers.Concatenate(axis=-1, name="input_concat")([seen, mask])
    dilated = iter(dilations)
    for layer_name, kind, kernel, stride, dilation, filters in COMPLETION_LAYERS:
        if layer_name.startswith("dilated_conv"):
            dilation = int(next(dilated))
        if layer_name == "output_conv":
            fan_in = kernel * kernel * int(x.shape[-1])
            # The residual starts small (a tenth of Torch7's bound, zero bias): an untrained
            # network returns nearly the harmonic fill, yet every layer gets a gradient from
            # the first step (a zero kernel would block them until it grew).
            init = ({"kernel_initializer": keras.initializers.RandomUniform(
                        -0.1 / math.sqrt(fan_in), 0.1 / math.sqrt(fan_in)),
                     "bias_initializer": "zeros"} if residual
                    else _initializers(config, fan_in))
            x = layers.Conv2D(3, kernel, padding="same", name=layer_name, **init)(x)
            break
        x = conv_bn_relu(x, scaled(filters, width), kernel, stride=stride, dilation=dilation,
                         name=layer_name, config=config, transpose=(kind == "deconv"),
                         batch_norm=batch_norm)
    # In float32 so mixed-precision policies still return float32 images.
    if residual:
        out = ResidualSigmoid(dtype="float32", name="completion")([seen, x])
    else:
        out = layers.Activation("sigmoid", dtype="float32", name="completion")(x)
    return keras.Model(inputs={"image": image, "mask": mask}, outputs=out, name=name)


def _discriminator_branch(prefix: str, size: int, filters: tuple[int, ...], width: float,
                          config: ModelConfig, batch_norm: str = "fused") -> keras.Model:
    _check_width(width)
    _check_batch_norm(batch_norm)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{prefix} discriminator input size must be a positive int, got {size!r}")
    inp = keras.Input(shape=(size, size, 3), name=f"{prefix}_image")
    x = inp
    for i, f in enumerate(filters, start=1):
        x = conv_bn_relu(x, scaled(f, width), 5, stride=2, name=f"{prefix}_conv{i}",
                         config=config, batch_norm=batch_norm)
    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    x = layers.Dense(scaled(FC_UNITS, width), name=f"{prefix}_fc",
                     **_initializers(config, int(x.shape[-1])))(x)
    x = layers.ReLU(name=f"{prefix}_fc_relu")(x)
    return keras.Model(inp, x, name=f"{prefix}_discriminator")


def global_discriminator(image_size: int = 256, width: float = 1.0,
                         config: ModelConfig | None = None,
                         batch_norm: str = "fused") -> keras.Model:
    """Global branch: 6 x (conv 5x5 stride 2 + BN + ReLU), 64..512 channels, then FC-1024.

    Input `global_image` (B, image_size, image_size, 3); output (B, 1024).
    """
    return _discriminator_branch("global", image_size, GLOBAL_FILTERS, width,
                                 config or ModelConfig(), batch_norm)


def local_discriminator(local_size: int = 128, width: float = 1.0,
                        config: ModelConfig | None = None,
                        batch_norm: str = "fused") -> keras.Model:
    """Local branch: 5 x (conv 5x5 stride 2 + BN + ReLU), 64..512 channels, then FC-1024.

    Input `local_image` (B, local_size, local_size, 3); output (B, 1024).
    """
    return _discriminator_branch("local", local_size, LOCAL_FILTERS, width,
                                 config or ModelConfig(), batch_norm)


def context_discriminator(image_size: int = 256, local_size: int = 128, width: float = 1.0,
                          config: ModelConfig | None = None,
                          name: str = "context_discriminator",
                          batch_norm: str = "fused") -> keras.Model:
    """Builds the context discriminator D.

    Inputs `global_image` (B, image_size, image_size, 3) and `local_image`
    (B, local_size, local_size, 3) in [0, 1]; the two 1024-d branch outputs are concatenated
    (`concat_2048`), mapped by FC-1 (`context_fc`, logits) and a sigmoid to the probability that
    the image is real (`realness`, float32). `batch_norm`: as in `completion_network`.
    """
    config = config or ModelConfig()
    if width == 1.0:
        width = config.width
    if local_size > image_size:
        raise ValueError(f"local_size ({local_size}) must be <= image_size ({image_size})")
    g = global_discriminator(image_size, width, config, batch_norm)
    lo = local_discriminator(local_size, width, config, batch_norm)
    global_image = keras.Input(shape=(image_size, image_size, 3), name="global_image")
    local_image = keras.Input(shape=(local_size, local_size, 3), name="local_image")
    x = layers.Concatenate(axis=-1, name="concat_2048")([g(global_image), lo(local_image)])
    logits = layers.Dense(1, dtype="float32", name="context_fc",
                          **_initializers(config, int(x.shape[-1])))(x)
    prob = layers.Activation("sigmoid", dtype="float32", name="realness")(logits)
    return keras.Model(inputs={"global_image": global_image, "local_image": local_image},
                       outputs=prob, name=name)


def discriminator_logits(discriminator: keras.Model) -> keras.Model:
    """The same discriminator (shared weights) returning logits, for a stable BCE loss."""
    return keras.Model(discriminator.inputs,
                       discriminator.get_layer("context_fc").output,
                       name=discriminator.name + "_logits")


def receptive_field(dilations=(2, 4, 8, 16)) -> int:
    """Nominal receptive field (pixels) of the completion network per Table 1.

    Sums (k - 1) * dilation * jump over the layers; a 4x4 stride-2 deconvolution output depends
    on 2 input pixels per axis. The extent actually measured (input gradients of one output
    pixel) depends on the pixel's position modulo 4 because of stride alignment: 299 pixels at
    the image centre with Keras 'same' padding (tests/networks/test_models.py), 299-303
    elsewhere, and not centred: an output reaches up to 153 pixels to one side
    (`regions.CONTEXT_MARGIN`).
    """
    rf, jump = 1, 1
    dil = iter(dilations)
    for layer_name, kind, kernel, stride, dilation, _ in COMPLETION_LAYERS:
        if layer_name.startswith("dilated_conv"):
            dilation = next(dil)
        if kind == "deconv":
            jump //= stride
            rf += (math.ceil(kernel / stride) - 1) * jump * stride
        else:
            rf += (kernel - 1) * dilation * jump
            jump *= stride
    return rf


def build_models(model_config: ModelConfig, image_size: int, local_size: int, *,
                 batch_norm: str = "fused"):
    """Returns (completion_network, context_discriminator) for a config."""
    c = completion_network(model_config.width, model_config, batch_norm=batch_norm)
    d = context_discriminator(image_size, local_size, model_config.width, model_config,
                              batch_norm=batch_norm)
    return c, d
