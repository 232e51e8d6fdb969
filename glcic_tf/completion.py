"""Completing images with a trained completion network, as the authors' `inpaint.lua` does.

Any image size and any mask (gray, RGB or RGBA; white = hole) are accepted:

1. The hole at full resolution is `gray(mask) >= 0.2` (the official threshold). RGBA and
   gray+alpha masks are multiplied by their alpha, so white strokes on a transparent layer work.
2. The image is scaled so that its long side is at most `maxdim` (default `default_maxdim`: 500
   for the paper's 256 px crops as the 2018 official `inpaint.lua`, whose 2020 version uses 600
   with post-processing off by default; scaled with the crop size for other presets) and its
   sides are rounded to multiples of 4 (`round(size / 4) * 4`, halves up, as the official
   tool), bilinear with anti-aliasing. The network's hole at that size is every pixel that
   overlaps the full-resolution hole (resized hole > 0): when the image is downscaled no
   content from inside a thin hole can leak into the completion. When no resizing is needed
   (sides already multiples of 4 and <= maxdim) the image and hole go to the network
   untouched.
3. The network input is built with `masks.network_inputs` (the config's input convention and
   mean pixel value), the network's output is composited with the (resized) input, upsampled to
   the original size and composited again at full resolution: pixels outside the hole are the
   input's pixels, bit for bit.
4. Post-processing (on by default, Section 4 of the paper; `postprocess="opencv"`, the
   default of `Completer.complete`): fast-marching inpainting
   (`cv2.inpaint`, INPAINT_TELEA, radius 1 as the official code) of the hole, then Poisson
   blending (`cv2.seamlessClone`, NORMAL_CLONE) of the completion into it, one connected
   component of the hole at a time with its own centre (the official code clones all holes with
   one bounding box). Images are padded so that holes touching the border blend too. Only hole
   pixels change. `postprocess="in-graph"` runs `glcic_tf.poisson.postprocess_image` instead:
   the same job in stock TensorFlow ops, the picture a SavedModel exported with in-graph
   post-processing serves (`docs/postprocess.md` compares the two).

Steps 1-3 are TensorFlow ops (`complete_full_resolution`), shared with the SavedModel's
`serving_default` signature (`glcic_tf.export`), so the CLI and TF Serving give the same pixels.

With `maxdim=0` nothing is scaled (`complete_regions`): the network completes only crops around
the holes, each hole's bounding box grown by the receptive field's reach (CONTEXT_MARGIN = 153
px) on every side, holes whose crops overlap merged into one region, regions larger than a pixel
budget tiled with overlapping context; hole pixels get exactly what a pass over the whole image
would give them, and post-processing runs on a crop around each region too. Memory depends on
the holes, not on the image (a 4000x3000 photo with a 300x300 hole: one ~608x608 pass).

Precision: `Completer.from_model(..., precision="bfloat16")` (and bf16 exports, see
`glcic_tf.export`) fold batch norm into the convolutions (`FoldedNetwork`) and compute in
bfloat16, except the convolutions in BFLOAT16_FLOAT32_LAYERS: conv1, conv2, conv10 and
output_conv compute in float32 (11.6 of 130 GMAC at 512x512, 9%). conv1 and output_conv buy the
most PSNR per FLOP (conv1 sees the raw image: rounding its input and 4-channel kernel costs
~0.9 dB); conv2 and conv10 add ~0.2-0.4 dB each. Measured on a 2-core Xeon with AVX512_BF16
(TF 2.16.2, oneDNN), full-width network with random He-normal weights
(`glcic_tf.benchmarks.completion.he_normal_weights`; a trained network's figures may differ),
512x512 random image with a centre hole, PSNR of the network output against the float32 Keras
model's, latency the fastest of 9 interleaved calls on a loaded machine (medians in the
benchmark's JSON):

  float32 layers                       PSNR dB (weights seed 0 / 1 / 2 / 3)  latency
  none (all bf16)                      39.28 / 39.48 /   -   /   -           0.63 s
  conv1                                40.16 / 39.88 /   -   /   -           0.62-0.65 s
  conv1, output_conv                   40.45 / 39.95 / 40.76 / 46.76         0.62-0.64 s
  conv1, conv10, output_conv           40.62 / 39.92 / 40.89 / 46.76         0.65-0.66 s
  conv1, conv2, output_conv            40.65 / 40.05 / 40.91 / 47.04         0.65-0.66 s
  conv1, conv2, conv10, output_conv    40.84 / 40.01 / 41.12 / 47.08         0.69 s  <- default
  conv1, deconv2, conv10, output_conv  40.97 / 40.02 / 41.30 / 47.32         ~0.75 s (not timed)
  all float32 (folded)                 inf                                   1.21-1.22 s

conv1 + conv2 + output_conv already stays above 40 dB for the four weight seeds and is ~0.03 s
faster; the default adds conv10 for margin on the benchmark's seed 0 (+0.2 dB, 40.8 dB) and
seeds 2-3, still well within the 0.80 s target. Pass `float32_layers=()` for an all-bf16
network (fastest, ~39.3 dB).

Usage:
  completer = Completer.from_path("runs/demo")        # run dir, SavedModel or serving base path
  out = completer.complete(load_image("in.png"), load_mask("mask.png"))
  save_image("out.png", out)
  full = completer.complete(load_image("big.jpg"), load_mask("big_mask.png"), maxdim=0)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Callable, Sequence

import numpy as np

HOLE_THRESHOLD = 0.2
PRECISIONS = ("float32", "bfloat16")
DEFAULT_MAXDIM = 500
# ITU-R 601 luma weights (they add up to exactly 1, so white stays 1.0).
LUMA = (0.299, 0.587, 0.114)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RANDOM_HOLES = (2, 4)
RANDOM_HOLE_SIZE = (32, 128)
INPAINT_RADIUS = 1
POSTPROCESS_MODES = ("opencv", "in-graph", "none")
# Pixels of context kept around each hole, and padding added around the crop, for seamlessClone
# (it zeroes the mask's outermost pixel and needs its ROI strictly inside the image).
_CLONE_MARGIN = 2
_CLONE_PAD = 4
# Resized holes above this count as hole: any overlap with the full-resolution hole.
_RESIZED_HOLE_EPS = 1e-3
# Convolutions that compute in float32 when precision is "bfloat16" (see the module docstring).
BFLOAT16_FLOAT32_LAYERS = ("conv1", "conv2", "conv10", "output_conv")

# complete_fn(image [B, h, w, 3] float32 in [0, 1], hole [B, h, w, 1] float32 0/1) -> composite
CompleteFn = Callable[..., "object"]


class CompletionError(ValueError):
    """An image, mask or model cannot be used; the message names the file and the problem."""


# --- sizes ---------------------------------------------------------------------------------------

def _round4(num: int, den: int) -> int:
    """round(num / den / 4) * 4 with halves rounded up, at least 4, in exact integer arithmetic."""
    return max(1, (2 * num + 4 * den) // (8 * den)) * 4


def default_maxdim(config) -> int:
    """The long side a model completes at by default: the official tool's 500 px for the
    paper's 256 px training crops, scaled with the crop size for other presets (a 128 px model
    gets 252), so photos reach the network at about the scale it was trained at."""
    if config is None:
        return DEFAULT_MAXDIM
    return _round4(DEFAULT_MAXDIM * int(config.data.image_size), 256)


# The network sees images or holes this many times larger than in training: warn.
SCALE_WARNING_FACTOR = 2.0


def scale_warning(config, net_height: int, net_width: int, hole_box: tuple[int, int] | None,
                  name: str = "image") -> str | None:
    """A warning when a model runs far outside the scale it was trained at, else None.

    The network was trained on `data.image_size` crops of images whose shorter side was
    resized to [resize_min, resize_max], with holes of at most `masks.hole_max` px (free-form
    strokes inside a `masks.local_size` patch). An image whose shorter side reaches the
    network more than SCALE_WARNING_FACTOR times larger than resize_max, or a hole more than
    that factor larger than the local patch, is out of that distribution: the dilated layers
    then combine features at distances they were never trained on (see docs/results.md, "Why
    the old demo painted noise").

    Args:
      net_height, net_width: the size the network completes at (after maxdim scaling).
      hole_box: (height, width) of the largest hole's bounding box at that size, or None.
    """
    if config is None:
        return None
    d, m = config.data, config.masks
    problems = []
    if min(net_height, net_width) > SCALE_WARNING_FACTOR * d.resize_max:
        problems.append(f"its shorter side reaches the network at {min(net_height, net_width)} "
                        f"px, while training resized images to {d.resize_min}-{d.resize_max} "
                        f"px")
    if hole_box is not None and max(hole_box) > SCALE_WARNING_FACTOR * m.local_size:
        problems.append(f"a hole spans {max(hole_box)} px at that scale, while training holes "
                        f"were at most {m.hole_max} px (local patch {m.local_size} px)")
    if not problems:
        return None
    return (f"{name}: the model ({config.name} preset, {d.image_size} px training crops) runs "
            f"far outside its training scale: " + "; ".join(problems) + ". Expect poor "
            f"results; scale the image down (--maxdim {default_maxdim(config)}) or use a model "
            f"trained at this scale.")


def network_size(height: int, width: int, maxdim: int = DEFAULT_MAXDIM) -> tuple[int, int]:
    """(height, width) the network sees: long side scaled to <= maxdim, sides multiples of 4."""
    if maxdim < 4:
        raise CompletionError(f"maxdim must be >= 4, got {maxdim}")
    longest = max(height, width)
    if longest > maxdim:
        return _round4(height * maxdim, longest), _round4(width * maxdim, longest)
    return _round4(height, 1), _round4(width, 1)


def _network_size_tf(height, width, maxdim):
    """`network_size` in TensorFlow int64 ops (same integer arithmetic)."""
    import tensorflow as tf

    h = tf.cast(height, tf.int64)
    w = tf.cast(width, tf.int64)
    maxdim = tf.cast(maxdim, tf.int64)
    longest = tf.maximum(h, w)
    scaled = longest > maxdim
    num_scale = tf.where(scaled, maxdim, tf.constant(1, tf.int64))
    den = tf.where(scaled, longest, tf.constant(1, tf.int64))

    def round4(n):
        return tf.maximum(tf.constant(1, tf.int64), (2 * n * num_scale + 4 * den) // (8 * den)) * 4

    return tf.cast(round4(h), tf.int32), tf.cast(round4(w), tf.int32)


# --- TensorFlow ops shared with the SavedModel ----------------------------------------------------

def mask_gray_tf(mask):
    """A decoded mask [H, W, C] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) in [0, 1] -> [H, W, 1].

    Colour is reduced to luma and multiplied by alpha when there is one. Works for a channel
    count known only at run time (tf.io.decode_image with channels=0).
    """
    import tensorflow as tf

    mask = tf.convert_to_tensor(mask, tf.float32)
    channels = tf.shape(mask)[-1]
    has_color = channels >= 3
    color_idx = tf.where(has_color, tf.constant([0, 1, 2]), tf.constant([0, 0, 0]))
    rgb = tf.gather(mask, color_idx, axis=-1)
    gray = tf.reduce_sum(rgb * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)
    has_alpha = tf.equal(channels, 2) | tf.equal(channels, 4)
    alpha = tf.gather(mask, tf.reshape(channels - 1, [1]), axis=-1)
    alpha = tf.where(has_alpha, alpha, tf.ones_like(alpha))
    return gray * alpha


def keras_complete_fn(model, data_config) -> CompleteFn:
    """The network's composite for a batch: network_inputs -> model -> composite.

    Args:
      model: the completion network (a keras.Model with inputs `image`, `mask`).
      data_config: `DataConfig` (input convention and mean pixel value).

    Returns:
      fn(image [B, h, w, 3] in [0, 1], hole [B, h, w, 1] 0/1) -> composite [B, h, w, 3] float32,
      h and w multiples of 4.
    """
    from glcic_tf import masks

    def fn(image, hole):
        inputs = masks.network_inputs(image, hole, data_config)
        generated = model(inputs, training=False)
        return masks.composite(generated, image, inputs["mask"])

    return fn


class FoldedNetwork:
    """Inference-only completion network with batch norm folded into the convolutions.

    In inference mode BN(conv(x)) = conv(x) * s + t with s = gamma / sqrt(var + eps) and
    t = beta - mean * s, so the convolution's kernel is scaled by s and its bias becomes
    bias * s + t. That removes 16 element-wise passes over large activations and lets oneDNN
    fuse convolution + bias + ReLU; in bfloat16 it also avoids casting every activation to
    float32 and back around Keras' batch norm. Same parameters, same layer order (the Keras
    model's layers are walked; ZeroPadding2D, dilated, strided and transposed convolutions are
    supported); results differ from the Keras model by float rounding only (~1e-5 in float32).

    With `compute_dtype="bfloat16"` the convolutions named in `float32_layers` keep float32
    kernels and compute in float32 (their input is cast up, their output stays float32 until
    the next bfloat16 layer casts it down); see `BFLOAT16_FLOAT32_LAYERS` for the default.
    `layer_dtypes` maps every convolution's name to the dtype it computes in.

    Build it with `fold_batch_norm(model, dtype)`, which checks it against the Keras model.
    """

    def __init__(self, model, compute_dtype: str = "float32",
                 float32_layers: Sequence[str] = ()):
        import keras
        import tensorflow as tf

        self.compute_dtype = tf.as_dtype(compute_dtype)
        if self.compute_dtype not in (tf.float32, tf.bfloat16):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {compute_dtype!r}")
        self.name = model.name
        self.variables = []
        self.layer_dtypes: dict[str, str] = {}
        self._steps = []  # (kind, attributes, kernel index, dtype) in call order
        from glcic_tf import models as models_lib

        layers = [layer for layer in model.layers
                  if not isinstance(layer, keras.layers.InputLayer)]
        # `harmonic_residual` networks: the fill runs first (in float32) and the output is
        # sigmoid(logit(fill) + residual).
        self._fill = None
        if layers and isinstance(layers[0], models_lib.HarmonicFill):
            self._fill = layers.pop(0)
        if not layers or not isinstance(layers[0], keras.layers.Concatenate):
            raise NotImplementedError("expected the input concatenation first")
        convs = []  # [kind, kernel, bias, attributes, layer name]
        for layer in layers[1:]:
            if isinstance(layer, keras.layers.ZeroPadding2D):
                convs.append(["pad", None, None, {"padding": layer.padding}, layer.name])
            elif isinstance(layer, keras.layers.Conv2DTranspose):
                kernel, bias = (w.numpy() for w in layer.weights)
                convs.append(["deconv", kernel, bias, {"strides": layer.strides,
                                                       "padding": layer.padding}, layer.name])
            elif isinstance(layer, keras.layers.Conv2D):
                kernel, bias = (w.numpy() for w in layer.weights)
                convs.append(["conv", kernel, bias, {"strides": layer.strides,
                                                     "padding": layer.padding,
                                                     "dilation": layer.dilation_rate},
                              layer.name])
            elif isinstance(layer, keras.layers.BatchNormalization):
                if not convs or convs[-1][0] not in ("conv", "deconv"):
                    raise NotImplementedError(f"{layer.name}: batch norm not after a conv")
                kind, kernel, bias, attrs, name = convs[-1]
                var = layer.moving_variance.numpy()
                scale = 1.0 / np.sqrt(var + layer.epsilon)
                if layer.gamma is not None:
                    scale = scale * layer.gamma.numpy()
                shift = -layer.moving_mean.numpy() * scale
                if layer.beta is not None:
                    shift = shift + layer.beta.numpy()
                # Output channels: last axis of a Conv2D kernel, axis 2 of a transposed one.
                kernel = kernel * (scale if kind == "conv" else scale[:, None])
                convs[-1] = [kind, kernel, bias * scale + shift, attrs, name]
            elif isinstance(layer, keras.layers.ReLU):
                convs.append(["relu", None, None, {}, layer.name])
            elif isinstance(layer, keras.layers.Activation) and layer.name == "completion":
                convs.append(["sigmoid", None, None, {}, layer.name])
            elif (isinstance(layer, models_lib.ResidualSigmoid) and layer.name == "completion"
                  and self._fill is not None):
                convs.append(["residual", None, None, {"layer": layer}, layer.name])
            else:
                raise NotImplementedError(f"{layer.name}: unsupported layer "
                                          f"{type(layer).__name__}")
        conv_names = [name for kind, _, _, _, name in convs if kind in ("conv", "deconv")]
        unknown = sorted(set(float32_layers) - set(conv_names))
        if unknown:
            raise ValueError(f"float32_layers: {unknown} are not convolutions of {model.name} "
                             f"(it has {conv_names})")
        dtype = self.compute_dtype
        for kind, kernel, bias, attrs, name in convs:
            index = None
            if kernel is not None:
                dtype = tf.float32 if name in float32_layers else self.compute_dtype
                self.layer_dtypes[name] = dtype.name
                index = len(self.variables)
                self.variables.append(tf.Variable(kernel, dtype=dtype, trainable=False))
                self.variables.append(tf.Variable(bias, dtype=dtype, trainable=False))
            # Padding and activations run in the dtype of the convolution they belong to.
            self._steps.append((kind, attrs, index, dtype))

    def __call__(self, inputs, training: bool = False):
        """inputs: {"image": [B, H, W, 3], "mask": [B, H, W, 1]} -> [B, H, W, 3] float32."""
        import tensorflow as tf

        image = tf.cast(inputs["image"], tf.float32)
        mask = tf.cast(inputs["mask"], tf.float32)
        if self._fill is not None:
            image = self._fill([image, mask])
        x = tf.concat([image, mask], axis=-1)
        for kind, attrs, index, dtype in self._steps:
            if kind in ("conv", "deconv"):
                x = tf.cast(x, dtype)  # no-op when already in this layer's dtype
            if kind == "pad":
                (top, bottom), (left, right) = attrs["padding"]
                x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
            elif kind == "conv":
                x = tf.nn.convolution(x, self.variables[index], strides=attrs["strides"],
                                      padding=attrs["padding"].upper(),
                                      dilations=attrs["dilation"])
                x = tf.nn.bias_add(x, self.variables[index + 1])
            elif kind == "deconv":
                kernel = self.variables[index]
                shape = tf.shape(x)
                sy, sx = attrs["strides"]
                out_shape = tf.stack([shape[0], shape[1] * sy, shape[2] * sx,
                                      tf.shape(kernel)[2]])
                x = tf.nn.conv2d_transpose(x, kernel, out_shape, strides=attrs["strides"],
                                           padding=attrs["padding"].upper())
                x = tf.nn.bias_add(x, self.variables[index + 1])
            elif kind == "relu":
                x = tf.nn.relu(x)
            elif kind == "sigmoid":
                x = tf.sigmoid(tf.cast(x, tf.float32))
            elif kind == "residual":
                x = attrs["layer"]([image, tf.cast(x, tf.float32)])
        return tf.cast(x, tf.float32)


def default_float32_layers(compute_dtype: str) -> tuple[str, ...]:
    """The layers kept in float32 by default: `BFLOAT16_FLOAT32_LAYERS` for bfloat16, else ()."""
    return BFLOAT16_FLOAT32_LAYERS if str(compute_dtype) == "bfloat16" else ()


def fold_batch_norm(model, compute_dtype: str = "float32", *, check: bool = True,
                    float32_layers: Sequence[str] | None = None):
    """`FoldedNetwork` of a Keras completion network, or the Keras model if it cannot be folded.

    Args:
      model: the completion network (float32 Keras model).
      compute_dtype: "float32" or "bfloat16".
      check: compare with the Keras model on a random 32x32 input; a mismatch is a bug and
        raises RuntimeError.
      float32_layers: with bfloat16, the convolutions (layer names) that compute in float32;
        None = `default_float32_layers(compute_dtype)` (`BFLOAT16_FLOAT32_LAYERS`), () = all
        bfloat16.

    Returns:
      A callable `net(inputs, training=False)`; the Keras model itself (with a warning) when its
      layers are not the ones `FoldedNetwork` knows.

    Raises:
      ValueError: a name in `float32_layers` is not a convolution of the model.
    """
    import logging

    if float32_layers is None:
        float32_layers = default_float32_layers(compute_dtype)
    try:
        folded = FoldedNetwork(model, compute_dtype, float32_layers)
    except NotImplementedError as e:
        logging.getLogger("glcic_tf.completion").warning(
            "batch norm not folded (%s); using the Keras model", e)
        return model
    if check:
        rng = np.random.default_rng(0)
        inputs = {"image": rng.random((1, 32, 32, 3)).astype(np.float32),
                  "mask": (rng.random((1, 32, 32, 1)) > 0.5).astype(np.float32)}
        want = np.asarray(model(inputs, training=False))
        got = np.asarray(folded(inputs))
        tolerance = 1e-4 if folded.compute_dtype.name == "float32" else 0.1
        if not np.abs(want - got).max() <= tolerance:
            raise RuntimeError(f"folded network differs from the Keras model by "
                               f"{np.abs(want - got).max():.3g} (> {tolerance})")
    return folded


def complete_full_resolution(image, hole, complete_fn: CompleteFn, maxdim):
    """Completes one image of any size in TensorFlow ops (eager or inside a graph).

    Args:
      image: [H, W, 3] float32 in [0, 1].
      hole: [H, W, 1] float32, 1 = hole (already thresholded).
      complete_fn: batched composite at the network's size (`keras_complete_fn`, or the
        SavedModel's `complete` signature).
      maxdim: the long side is scaled down to this when larger.

    Returns:
      [H, W, 3] float32: the upsampled completion inside the hole, `image` outside.
    """
    import tensorflow as tf

    from glcic_tf import masks

    image = tf.convert_to_tensor(image, tf.float32)
    hole = tf.convert_to_tensor(hole, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    net_h, net_w = _network_size_tf(height, width, maxdim)
    same = tf.logical_and(tf.equal(net_h, height), tf.equal(net_w, width))

    def resized():
        size = tf.stack([net_h, net_w])
        small = tf.image.resize(image[tf.newaxis], size, antialias=True)
        small_hole = tf.image.resize(hole[tf.newaxis], size, antialias=True)
        small_hole = tf.cast(small_hole > _RESIZED_HOLE_EPS, tf.float32)
        return tf.clip_by_value(small, 0.0, 1.0), small_hole

    def untouched():
        return image[tf.newaxis], hole[tf.newaxis]

    small, small_hole = tf.cond(same, untouched, resized)
    out = tf.cast(complete_fn(small, small_hole), tf.float32)
    out = tf.cond(same, lambda: out,
                  lambda: tf.image.resize(out, tf.stack([height, width]), method="bilinear"))
    return masks.composite(tf.clip_by_value(out[0], 0.0, 1.0), image, hole)


def to_uint8_tf(image):
    """[0, 1] float -> uint8, rounding to nearest (x * 255 rounded; exact for k / 255)."""
    import tensorflow as tf

    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)


# --- files and arrays -----------------------------------------------------------------------------

def load_image(path: str) -> np.ndarray:
    """Reads an image file as uint8 RGB [H, W, 3] (gray and RGBA are converted, alpha dropped).

    Raises:
      CompletionError: the file does not exist or is not a readable image.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise CompletionError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, np.float64) / 65535.0 * 255.0
                gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"), np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CompletionError(f"{path}: cannot read image ({e})") from e


def load_mask(path: str) -> np.ndarray:
    """Reads a mask file as float32 [H, W] in [0, 1]; >= 0.2 is hole (white = hole).

    Gray, gray+alpha, RGB, RGBA and palette images are accepted: colour is reduced to luma
    (ITU-R 601) and multiplied by alpha when there is one.

    Raises:
      CompletionError: the file does not exist or is not a readable image.
    """
    from PIL import Image

    if not os.path.isfile(path):
        raise CompletionError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA")
                mode = "RGBA"
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.clip(np.asarray(im, np.float32) / 65535.0, 0.0, 1.0)
            if mode == "F":
                return np.clip(np.asarray(im, np.float32), 0.0, 1.0)
            if mode in ("1", "L"):
                return np.asarray(im.convert("L"), np.float32) / 255.0
            if mode == "LA":
                la = np.asarray(im, np.float32) / 255.0
                return la[..., 0] * la[..., 1]
            if mode not in ("RGB", "RGBA"):
                im = im.convert("RGBA")
            arr = np.asarray(im, np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CompletionError(f"{path}: cannot read mask ({e})") from e
    gray = arr[..., :3] @ np.asarray(LUMA, np.float32)
    if arr.shape[-1] == 4:
        gray = gray * arr[..., 3]
    return gray.astype(np.float32)


def save_image(path: str, image: np.ndarray) -> None:
    """Writes uint8 [H, W, 3] RGB or [H, W] gray; the format follows the extension."""
    from PIL import Image

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)


def random_holes(height: int, width: int, rng: np.random.Generator, *,
                 num_holes: tuple[int, int] = RANDOM_HOLES,
                 hole_size: tuple[int, int] = RANDOM_HOLE_SIZE) -> np.ndarray:
    """Random rectangular holes as the official tool draws them when no mask is given.

    `num_holes` (inclusive range, official: 2-4) rectangles whose sides are uniform in
    `hole_size` (official: [32, 128] pixels at the input image's own scale), clipped to the image.

    Returns:
      bool [height, width], True = hole.
    """
    if height < 1 or width < 1:
        raise CompletionError(f"random_holes: image size must be positive, got {height}x{width}")
    hole = np.zeros((height, width), bool)
    count = int(rng.integers(num_holes[0], num_holes[1] + 1))
    for _ in range(count):
        h = min(int(rng.integers(hole_size[0], hole_size[1] + 1)), max(1, height - 2))
        w = min(int(rng.integers(hole_size[0], hole_size[1] + 1)), max(1, width - 2))
        y = int(rng.integers(0, height - h + 1))
        x = int(rng.integers(0, width - w + 1))
        hole[y:y + h, x:x + w] = True
    return hole


def _random_hole_size(completer, shape, maxdim) -> tuple[int, int]:
    """The official tool's 32-128 px random holes, scaled to the model: the training holes'
    sides (`masks.hole_min`-`hole_max`, times 32/96 and 128/128 of them for the paper) at
    the scale the network completes this image at."""
    config = completer.config
    if config is None:
        return RANDOM_HOLE_SIZE
    maxdim = completer.default_maxdim if maxdim is None else maxdim
    longest = max(shape)
    factor = 1.0 if maxdim == 0 or longest <= maxdim else longest / maxdim
    low = max(4, int(round(config.masks.hole_min / 3 * factor)))
    high = max(low, int(round(config.masks.hole_max * factor)))
    return low, high


def _as_rgb_uint8(image, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise CompletionError(f"{name}: expected an image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise CompletionError(f"{name}: expected a uint8 image, got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CompletionError(f"{name}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def _as_hole(mask, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise CompletionError(f"{name}: expected a mask [H, W] (or [H, W, 1]), got shape "
                              f"{mask.shape}; load colour masks with load_mask()")
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask >= HOLE_THRESHOLD * 255
    return mask.astype(np.float32) >= HOLE_THRESHOLD


# --- post-processing ------------------------------------------------------------------------------

def postprocess(completed: np.ndarray, hole: np.ndarray, *,
                inpaint_radius: int = INPAINT_RADIUS) -> np.ndarray:
    """The paper's post-processing: fast marching inpainting, then Poisson blending per hole.

    As the official code: the hole of the completed image is refilled by Telea's fast marching
    method, and the completed image is seamlessly cloned (NORMAL_CLONE) onto that with the hole
    as the clone mask, so the completion keeps its gradients and meets its surroundings without
    a colour seam. Here each connected component of the hole is cloned on its own, on a crop
    around it padded by edge replication, so that separate holes each get their own region and
    holes touching the image border are handled.

    Args:
      completed: uint8 [H, W, 3], the network's composite.
      hole: bool [H, W], True = hole.
      inpaint_radius: Telea's neighbourhood radius (official: 1).

    Returns:
      uint8 [H, W, 3]; pixels outside the hole are `completed`'s.
    """
    import cv2

    completed = np.ascontiguousarray(completed, np.uint8)
    hole = np.asarray(hole, bool)
    hole_u8 = hole.astype(np.uint8) * 255
    if not hole.any():
        return completed.copy()
    base = cv2.inpaint(completed, hole_u8, inpaint_radius, cv2.INPAINT_TELEA)
    out = base.copy()
    height, width = hole.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hole_u8, connectivity=8)
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label, :4])
        x0, y0 = max(0, x - _CLONE_MARGIN), max(0, y - _CLONE_MARGIN)
        x1, y1 = min(width, x + w + _CLONE_MARGIN), min(height, y + h + _CLONE_MARGIN)
        component = labels[y0:y1, x0:x1] == label
        pad = [_CLONE_PAD] * 4
        src = cv2.copyMakeBorder(completed[y0:y1, x0:x1], *pad, cv2.BORDER_REPLICATE)
        dst = cv2.copyMakeBorder(out[y0:y1, x0:x1], *pad, cv2.BORDER_REPLICATE)
        clone_mask = cv2.copyMakeBorder(component.astype(np.uint8) * 255, *pad,
                                        cv2.BORDER_REPLICATE)
        # seamlessClone zeroes the mask's outermost pixels, then clones its bounding box onto
        # a box of the same size centred at `center`: the box's own centre keeps it in place.
        bx, by, bw, bh = cv2.boundingRect(
            clone_mask[1:-1, 1:-1])  # what remains after the zeroed border
        center = (bx + 1 + bw // 2, by + 1 + bh // 2)
        blended = cv2.seamlessClone(src, dst, clone_mask, center, cv2.NORMAL_CLONE)
        crop = blended[_CLONE_PAD:-_CLONE_PAD, _CLONE_PAD:-_CLONE_PAD]
        region = out[y0:y1, x0:x1]
        region[component] = crop[component]
    return np.where(hole[..., None], out, completed)


_postprocess = postprocess  # `Completer.complete` has an argument of the same name


@functools.lru_cache(maxsize=None)
def _postprocess_in_graph_fn():
    import tensorflow as tf

    from glcic_tf import poisson

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, None], tf.bool)])
    def run(completed, hole):
        out = poisson.postprocess_image(tf.cast(completed, tf.float32) / 255.0,
                                        tf.cast(hole, tf.float32)[..., tf.newaxis])
        return to_uint8_tf(out)

    return run


def postprocess_in_graph(completed: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`poisson.postprocess_image` of a uint8 composite [H, W, 3] with its bool hole [H, W]
    (one tf.function for every size); pixels outside the hole are `completed`'s."""
    out = _postprocess_in_graph_fn()(completed, np.asarray(hole, bool)).numpy()
    return np.where(np.asarray(hole, bool)[..., None], out, completed)


def postprocess_mode(value) -> str:
    """"opencv", "in-graph" or "none" from a mode or a bool (True = "opencv", the paper's)."""
    if value is True:
        return "opencv"
    if value is False or value is None:
        return "none"
    if value not in POSTPROCESS_MODES:
        raise CompletionError(f"postprocess must be one of {POSTPROCESS_MODES}, got {value!r}")
    return value


# --- full resolution, region by region (maxdim=0) -------------------------------------------------
#
# The completion network is fully convolutional and a hole pixel's output depends only on the
# input within its receptive field, so completing a crop that holds every hole pixel plus
# CONTEXT_MARGIN pixels of context on each side gives, inside the hole, the same output as a
# pass over the whole image: zero padding at the crop's border cannot reach the hole. Crops
# start on multiples of 4 so that the two stride-2 layers see the same pixel phase as in a
# whole-image pass (the outputs are then bit-identical on CPU in practice). Memory depends on
# the crops, not on the image: a 4000x3000 photo with a 300x300 hole runs one ~608x608 pass.

# How far (pixels) an output pixel's receptive field reaches on one side. The field is 299-303
# px wide (`models.receptive_field()` counts 301) and not centred on the pixel:
# strided 'same' convolutions pad 0 before and 1 after (the "torch" padding mirrors that), so
# the reach is 147-153 px depending on the pixel's position mod 4 and the side, measured by
# tests/test_large_images.py. 153 covers every pixel, side and padding mode.
CONTEXT_MARGIN = 153
# Most pixels one network pass sees; larger regions are tiled. At width 1.0 a float32 pass takes
# about 0.75 KiB per pixel on CPU: a 1408x1408 pass peaks at 2.2 GiB resident, TensorFlow and a
# 4000x3000 image included (glcic_tf.benchmarks.large_image).
DEFAULT_REGION_PIXELS = 1448 * 1448
# Context kept around each region's holes for post-processing: Telea with radius 1 reads one
# pixel around the hole, seamlessClone two (`_CLONE_MARGIN`).
_POSTPROCESS_MARGIN = 8

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1) in image pixels, ends exclusive


@dataclasses.dataclass(frozen=True)
class Tile:
    """One network pass of a region.

    Attributes:
      crop: the image box the network sees (clipped to the image; starts on multiples of 4;
        padded by mirroring, hole and image alike, up to multiples of 4 when it ends at an
        image border that is not).
      keep: the box whose hole pixels take this pass's output; `crop` extends it by the
        context margin on every side (or to the image border).
    """

    crop: Box
    keep: Box

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input, the crop padded to multiples of 4."""
        y0, x0, y1, x1 = self.crop
        return _ceil4(y1 - y0), _ceil4(x1 - x0)


@dataclasses.dataclass(frozen=True)
class Region:
    """Holes completed together: connected components whose context boxes overlap.

    Attributes:
      holes: bounding box of the region's hole pixels.
      num_components: connected components (8-connectivity) merged into the region.
      tiles: its network passes; one unless its crop has more than the pixel budget.
    """

    holes: Box
    num_components: int
    tiles: tuple[Tile, ...]

    @property
    def crop(self) -> Box:
        """Union of the tiles' crops."""
        boxes = [t.crop for t in self.tiles]
        return (min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes))


def _floor4(value: int) -> int:
    return value // 4 * 4


def _ceil4(value: int) -> int:
    return -(-value // 4) * 4


def _context_box(box: Box, margin: int, height: int, width: int) -> Box:
    """`box` grown by `margin`, start rounded down and end up to multiples of 4, clipped."""
    y0, x0, y1, x1 = box
    return (max(0, _floor4(y0 - margin)), max(0, _floor4(x0 - margin)),
            min(height, _ceil4(y1 + margin)), min(width, _ceil4(x1 + margin)))


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _merge_overlapping(boxes: Sequence[Box], margin: int, height: int,
                       width: int) -> list[tuple[Box, int]]:
    """Merges boxes whose context boxes overlap, until no two merged boxes' context boxes do.

    Returns:
      (union box, number of input boxes merged) per group, sorted by position.
    """
    groups = [(tuple(int(v) for v in box), 1) for box in boxes]
    while True:
        ctx = [_context_box(box, margin, height, width) for box, _ in groups]
        parent = list(range(len(groups)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        # Sweep over rows: `active` holds the boxes that reach below the current box's top.
        merged = False
        active: list[int] = []
        for i in sorted(range(len(groups)), key=lambda k: ctx[k][0]):
            active = [j for j in active if ctx[j][2] > ctx[i][0]]
            for j in active:
                if ctx[j][1] < ctx[i][3] and ctx[i][1] < ctx[j][3]:
                    root_i, root_j = find(i), find(j)
                    if root_i != root_j:
                        parent[root_i] = root_j
                        merged = True
            active.append(i)
        if not merged:
            return sorted(groups)
        combined: dict[int, tuple[Box, int]] = {}
        for i, (box, count) in enumerate(groups):
            root = find(i)
            if root in combined:
                other, other_count = combined[root]
                combined[root] = (_union(other, box), other_count + count)
            else:
                combined[root] = (box, count)
        groups = list(combined.values())


def _hole_bbox(hole: np.ndarray, box: Box) -> Box | None:
    """Bounding box of the hole pixels inside `box`, or None when there are none."""
    y0, x0, y1, x1 = box
    sub = hole[y0:y1, x0:x1]
    rows = np.flatnonzero(sub.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(sub.any(axis=0))
    return (y0 + int(rows[0]), x0 + int(cols[0]), y0 + int(rows[-1]) + 1,
            x0 + int(cols[-1]) + 1)


def _axis_cores(start: int, end: int, crop_size: int, tile_size: int,
                margin4: int) -> list[tuple[int, int]]:
    """Splits the hole extent [start, end) into cores whose crops are at most `tile_size`."""
    if crop_size <= tile_size:
        return [(start, end)]
    core = tile_size - 2 * margin4
    first = _floor4(start)
    return [(max(s, start), min(s + core, end)) for s in range(first, end, core)]


def _check_region_args(margin: int, max_pixels: int) -> None:
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise CompletionError(f"context margin must be an integer >= 0, got {margin!r}")
    smallest = (2 * _ceil4(margin) + 4) ** 2
    if (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
            or max_pixels < smallest):
        raise CompletionError(
            f"max_region_pixels must be an integer >= {smallest} (a tile of side "
            f"{2 * _ceil4(margin) + 4} px: a 4 px core plus the {margin} px context margin on "
            f"each side, rounded to multiples of 4), got {max_pixels!r}")


def plan_regions(hole: np.ndarray, *, margin: int = CONTEXT_MARGIN,
                 max_pixels: int = DEFAULT_REGION_PIXELS) -> list[Region]:
    """The network passes that complete `hole` at full resolution.

    Connected components of the hole (8-connectivity) become regions; regions whose context
    boxes (hole bounding box grown by `margin`, rounded out to multiples of 4, clipped to the
    image) overlap are merged, repeatedly, so no two regions' crops overlap and no pixel is
    computed twice. A region whose crop exceeds `max_pixels` is tiled: its hole bounding box
    is cut into cores (starting on multiples of 4), each completed from a crop of the core
    grown by the margin, and each output is kept on its core only. Since every kept pixel has
    `margin` pixels of context in its own crop, tiles need no blending: with
    margin >= CONTEXT_MARGIN the seams are invisible (outputs equal a whole-image pass).
    Cores without hole pixels are skipped and each core is shrunk to its hole pixels.

    Args:
      hole: bool [H, W], True = hole.
      margin: context pixels on each side of the holes (>= CONTEXT_MARGIN for outputs equal
        to a whole-image pass; less is faster but changes the completion).
      max_pixels: most pixels of one network input (its memory bound).

    Returns:
      Regions sorted by position (top, then left).

    Raises:
      CompletionError: bad margin or a budget too small for one tile with that margin.
    """
    import cv2

    _check_region_args(margin, max_pixels)
    hole = np.asarray(hole, bool)
    if hole.ndim != 2:
        raise CompletionError(f"hole must be [H, W], got shape {hole.shape}")
    height, width = hole.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(hole).view(np.uint8), connectivity=8)
    boxes = [(int(y), int(x), int(y + h), int(x + w)) for x, y, w, h in stats[1:count, :4]]
    margin4 = _ceil4(margin)
    tile_side = _floor4(math.isqrt(int(max_pixels)))
    regions = []
    for box, num in _merge_overlapping(boxes, margin, height, width):
        crop = _context_box(box, margin, height, width)
        crop_h, crop_w = _ceil4(crop[2] - crop[0]), _ceil4(crop[3] - crop[1])
        if crop_h * crop_w <= max_pixels:
            regions.append(Region(box, num, (Tile(crop, box),)))
            continue
        # Tiles span the whole crop along an axis that fits in a square tile, so that long
        # thin regions take fewer, longer tiles.
        tile_h = tile_w = tile_side
        if crop_h <= tile_side:
            tile_w = _floor4(max_pixels // crop_h)
        elif crop_w <= tile_side:
            tile_h = _floor4(max_pixels // crop_w)
        tiles = []
        for ky0, ky1 in _axis_cores(box[0], box[2], crop_h, tile_h, margin4):
            for kx0, kx1 in _axis_cores(box[1], box[3], crop_w, tile_w, margin4):
                keep = _hole_bbox(hole, (ky0, kx0, ky1, kx1))
                if keep is not None:
                    tiles.append(Tile(_context_box(keep, margin, height, width), keep))
        regions.append(Region(box, num, tuple(tiles)))
    return regions


def _pad_to_4(array: np.ndarray) -> np.ndarray:
    """Mirror-pads rows and columns at the end up to multiples of 4 (no-op when they are)."""
    pad_h, pad_w = (-array.shape[0]) % 4, (-array.shape[1]) % 4
    if not (pad_h or pad_w):
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="symmetric")


def complete_regions(image: np.ndarray, hole: np.ndarray, complete_fn: CompleteFn, *,
                     margin: int = CONTEXT_MARGIN, max_pixels: int = DEFAULT_REGION_PIXELS,
                     postprocess: bool = False,
                     regions: Sequence[Region] | None = None) -> np.ndarray:
    """Completes an image at full resolution, one crop around each group of holes at a time.

    See `plan_regions` for the crops. Each crop's network input is built from the whole hole
    mask (holes of other regions inside the context are holes there too, as in a whole-image
    pass); a crop ending at an image border whose size is not a multiple of 4 is padded by
    mirroring the image and the hole alike (so no hole content leaks in). Only the hole
    pixels of each tile's `keep` box are written: pixels outside the hole are the input's,
    bit for bit. Memory is bounded by the largest crop (`max_pixels`), the image and one
    copy of it.

    Args:
      image: [H, W, 3], uint8 or float32 in [0, 1].
      hole: bool [H, W], True = hole.
      complete_fn: batched composite (`keras_complete_fn` or the SavedModel's `complete`
        signature): float32 image [1, h, w, 3] in [0, 1], hole [1, h, w, 1] -> [1, h, w, 3].
      margin, max_pixels: see `plan_regions`.
      postprocess: the paper's post-processing (`postprocess`), on a crop around each group
        of holes (uint8 images only); gives the same pixels as post-processing the whole
        image.
      regions: a plan from `plan_regions(hole, ...)` (default: made here).

    Returns:
      The completed image, same shape and dtype as `image`; uint8 rounds to nearest.

    Raises:
      CompletionError: bad shapes or dtypes, bad margin or budget.
    """
    image = np.asarray(image)
    hole = np.asarray(hole, bool)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != hole.shape:
        raise CompletionError(f"expected an image [H, W, 3] and a hole [H, W] of the same size, "
                              f"got {image.shape} and {hole.shape}")
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and image.dtype != np.float32:
        raise CompletionError(f"expected a uint8 or float32 image, got dtype {image.dtype}")
    if postprocess and not is_uint8:
        raise CompletionError("post-processing needs a uint8 image")
    if regions is None:
        regions = plan_regions(hole, margin=margin, max_pixels=max_pixels)
    height, width = hole.shape
    out = image.copy()
    for region in regions:
        for tile in region.tiles:
            y0, x0, y1, x1 = tile.crop
            crop = _pad_to_4(image[y0:y1, x0:x1])
            crop_hole = _pad_to_4(hole[y0:y1, x0:x1])
            x = crop.astype(np.float32) / 255.0 if is_uint8 else crop
            result = np.asarray(complete_fn(x[np.newaxis],
                                            crop_hole[np.newaxis, ..., np.newaxis]
                                            .astype(np.float32)))[0]
            ky0, kx0, ky1, kx1 = tile.keep
            result = np.clip(result[ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0], 0.0, 1.0)
            if is_uint8:  # as to_uint8_tf: float32 x * 255, rounded half to even
                result = np.round(result * np.float32(255.0)).astype(np.uint8)
            keep_hole = hole[ky0:ky1, kx0:kx1]
            out[ky0:ky1, kx0:kx1][keep_hole] = result[keep_hole]
    if postprocess:
        for box, _ in _merge_overlapping([r.holes for r in regions], _POSTPROCESS_MARGIN,
                                         height, width):
            y0, x0, y1, x1 = _context_box(box, _POSTPROCESS_MARGIN, height, width)
            out[y0:y1, x0:x1] = _postprocess(out[y0:y1, x0:x1], hole[y0:y1, x0:x1])
    return out


# --- the completer --------------------------------------------------------------------------------

class Completer:
    """Completes images with one model: a Keras network, a training run or a SavedModel.

    Build it with `from_model`, `from_run_dir`, `from_saved_model` or `from_path`, then call
    `complete(image, mask)`.
    """

    def __init__(self, config, complete_fn: CompleteFn, *, source: str, step: int | None = None,
                 precision: str | None = None, maxdim: int | None = None):
        """Wraps a batched `complete_fn` (see `keras_complete_fn`); prefer the from_* builders.

        `precision` ("float32", "bfloat16" or None = unknown) is for information only.
        `maxdim`: the default of `complete(maxdim=None)`; None = `default_maxdim(config)`.
        """
        import tensorflow as tf

        self.config = config
        self.default_maxdim = int(maxdim) if maxdim else default_maxdim(config)
        self.warn: Callable[[str], None] = _warn  # scale warnings (see `scale_warning`)
        self.source = source
        self.step = step
        self.precision = precision
        self._complete_fn = complete_fn

        def make_run(in_graph: bool):
            from glcic_tf import poisson

            @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                          tf.TensorSpec([None, None], tf.bool),
                                          tf.TensorSpec([], tf.int32)])
            def run(image, hole, maxdim):
                image_f = tf.cast(image, tf.float32) / 255.0
                hole_f = tf.cast(hole, tf.float32)[..., tf.newaxis]
                out = complete_full_resolution(image_f, hole_f, complete_fn, maxdim)
                if in_graph:  # what an export with in-graph post-processing serves
                    out = poisson.postprocess_image(out, hole_f)
                return to_uint8_tf(out)

            return run

        self._run = make_run(False)
        self._run_in_graph = make_run(True)

        # Region by region (maxdim=0): one trace for any crop size.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([None, None, None, 1], tf.float32)])
        def run_crop(image, hole):
            return tf.cast(complete_fn(image, hole), tf.float32)

        self._run_crop = run_crop

    @classmethod
    def from_model(cls, config, model, *, source: str = "keras model", step: int | None = None,
                   precision: str = "float32", fold: bool = False,
                   float32_layers: Sequence[str] | None = None) -> "Completer":
        """A Keras completion network with the config it was trained with (`config.data`).

        Args:
          precision: "float32", or "bfloat16" (implies `fold`): computes in bf16 except the
            convolutions in `float32_layers`.
          fold: fold batch norm into the convolutions (faster; float rounding differences).
          float32_layers: with bfloat16, the convolutions kept in float32; None =
            `BFLOAT16_FLOAT32_LAYERS` (first conv, conv2 and the last two convs), () = all bf16.
        """
        if precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        if fold or precision == "bfloat16":
            model = fold_batch_norm(model, precision, float32_layers=float32_layers)
        return cls(config, keras_complete_fn(model, config.data), source=source, step=step,
                   precision=precision)

    @classmethod
    def from_run_dir(cls, run_dir: str, precision: str = "float32") -> "Completer":
        """The latest checkpoint of a training run directory (see `glcic_tf.runs`).

        Args:
          precision: "float32" or "bfloat16" (see `from_model`).
        """
        from glcic_tf import runs

        if precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        try:
            config, model, step = runs.load_completion_network(run_dir)
        except FileNotFoundError as e:
            raise CompletionError(str(e)) from e
        return cls.from_model(config, model, source=f"run {run_dir} (step {step})", step=step,
                              precision=precision)

    @classmethod
    def from_saved_model(cls, path: str, precision: str | None = None) -> "Completer":
        """A SavedModel written by `glcic_tf.export` (its `complete` signature).

        Args:
          path: the SavedModel directory.
          precision: None, or the precision the caller expects: a SavedModel computes in the
            precision it was exported with (`assets/export.json`), so a different one raises
            CompletionError (re-export with that precision, or complete from the run dir).
        """
        import tensorflow as tf

        from glcic_tf.config import GLCICConfig

        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise CompletionError(f"{path}: not a SavedModel (no saved_model.pb)")
        loaded = tf.saved_model.load(path)
        if "complete" not in loaded.signatures:
            raise CompletionError(f"{path}: SavedModel has no 'complete' signature "
                                  f"(has {sorted(loaded.signatures)})")
        signature = loaded.signatures["complete"]
        config_file = os.path.join(path, "assets", "config.json")
        config = GLCICConfig.load(config_file) if os.path.isfile(config_file) else None
        if precision is not None and precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        info = {}
        info_file = os.path.join(path, "assets", "export.json")
        if os.path.isfile(info_file):
            with open(info_file) as f:
                info = json.load(f)
        exported = info.get("precision")
        if precision is not None and precision != exported:
            raise CompletionError(
                f"{path}: this SavedModel computes in {exported or 'an unknown precision'} "
                f"(its assets/export.json), not {precision}; the precision of a SavedModel is "
                f"fixed at export: omit --precision, export with --precision {precision}, or "
                f"complete from the training run directory")

        def fn(image, hole):
            return signature(image=image, mask=hole)["completed"]

        completer = cls(config, fn, source=f"SavedModel {path}", step=info.get("step"),
                        precision=exported, maxdim=info.get("maxdim"))
        completer._loaded = loaded  # keep the restored variables alive
        return completer

    @classmethod
    def from_path(cls, path: str, precision: str | None = None) -> "Completer":
        """A run dir, a SavedModel dir, or a TF Serving base path (its highest version).

        Args:
          path: the model directory.
          precision: "float32" or "bfloat16" for a run dir (None = float32); for a SavedModel
            None or the precision it was exported with (see `from_saved_model`).
        """
        from glcic_tf import runs

        if precision is not None and precision not in PRECISIONS:
            raise CompletionError(f"precision must be float32 or bfloat16, got {precision!r}")
        if not os.path.isdir(path):
            raise CompletionError(f"{path}: model directory not found")
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return cls.from_saved_model(path, precision)
        if runs.is_run_dir(path):
            return cls.from_run_dir(path, precision or "float32")
        versions = [int(n) for n in os.listdir(path) if n.isdigit()
                    and os.path.isfile(os.path.join(path, n, "saved_model.pb"))]
        if versions:
            return cls.from_saved_model(os.path.join(path, str(max(versions))), precision)
        raise CompletionError(
            f"{path}: not a training run dir (config.json + checkpoints/), a SavedModel "
            f"(saved_model.pb) or a TF Serving base path (integer version subdirectories)")

    def complete(self, image: np.ndarray, mask: np.ndarray, *, postprocess: bool | str = True,
                 maxdim: int | None = None, name: str = "image", mask_name: str = "mask",
                 context_margin: int = CONTEXT_MARGIN,
                 max_region_pixels: int = DEFAULT_REGION_PIXELS) -> np.ndarray:
        """Completes the holes of one image.

        Args:
          image: uint8 [H, W, 3] RGB (gray [H, W] and RGBA are accepted).
          mask: [H, W] bool, or float in [0, 1] / uint8 with >= 0.2 (of 1 / 255) = hole.
          postprocess: "opencv" (or True): fast marching + Poisson blending per hole with
            OpenCV (the paper's post-processing); "in-graph": the same in TensorFlow ops, as
            a SavedModel exported with it serves (`glcic_tf.poisson`); "none" (or False).
          maxdim: the long side is scaled down to this for the network when larger; 0 = no
            scaling: full resolution, completing only crops around the holes
            (`complete_regions`), with memory bounded by `max_region_pixels`. None: the
            model's default (`self.default_maxdim`: the export's, else `default_maxdim`).
          name, mask_name: how errors refer to the image and the mask (e.g. file paths).
          context_margin, max_region_pixels: with maxdim=0, the context kept on each side of
            the holes and the most pixels of one network pass (see `plan_regions`).

        Returns:
          uint8 [H, W, 3]: the completed image, equal to `image` outside the hole.

        Raises:
          CompletionError: bad shapes or dtypes, mask size differs from the image, empty mask.
        """
        mode = postprocess_mode(postprocess)
        image = _as_rgb_uint8(image, name)
        hole = _as_hole(mask, mask_name)
        if hole.shape != image.shape[:2]:
            raise CompletionError(
                f"{mask_name}: mask size {hole.shape[1]}x{hole.shape[0]} (WxH) differs from "
                f"image size {image.shape[1]}x{image.shape[0]} of {name}")
        if not hole.any():
            raise CompletionError(f"{mask_name}: empty mask (no pixel >= {HOLE_THRESHOLD}); "
                                  "white marks the hole")
        if maxdim is None:
            maxdim = self.default_maxdim
        if maxdim != 0 and maxdim < 4:
            raise CompletionError(f"maxdim must be >= 4, or 0 for full resolution, got {maxdim}")
        net_h, net_w = (image.shape[:2] if maxdim == 0
                        else network_size(image.shape[0], image.shape[1], maxdim))
        ys, xs = np.nonzero(hole)
        scale = net_h / image.shape[0]
        box = (int(round((ys.max() - ys.min() + 1) * scale)),
               int(round((xs.max() - xs.min() + 1) * scale)))
        message = scale_warning(self.config, net_h, net_w, box, name)
        if message:
            self.warn(message)
        if maxdim == 0:
            out = complete_regions(image, hole, self._run_crop, margin=context_margin,
                                   max_pixels=max_region_pixels,
                                   postprocess=mode == "opencv")
            if mode == "in-graph":
                out = np.where(hole[..., None], postprocess_in_graph(out, hole), image)
            return out
        run = self._run_in_graph if mode == "in-graph" else self._run
        out = run(image, hole, np.int32(maxdim)).numpy()
        out = np.where(hole[..., None], out, image)
        if mode == "opencv":
            out = _postprocess(out, hole)
        return out


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- files and folders (the CLI) -----------------------------------------------------------------

def _list_images(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(folder, n)))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _match_masks(images: Sequence[str], mask_dir: str) -> list[str]:
    by_stem: dict[str, list[str]] = {}
    for m in _list_images(mask_dir):
        by_stem.setdefault(_stem(m), []).append(m)
    matched = []
    for image in images:
        found = by_stem.get(_stem(image), [])
        if not found:
            raise CompletionError(f"{image}: no mask for this image in {mask_dir} "
                                  f"(masks are matched by file name without extension)")
        if len(found) > 1:
            raise CompletionError(f"{image}: several masks match in {mask_dir}: {found}")
        matched.append(found[0])
    return matched


def complete_files(completer: Completer, image_path: str, mask_path: str | None, out_path: str,
                   *, maxdim: int | None = None, postprocess: bool | str = True,
                   seed: int = 0,
                   context_margin: int = CONTEXT_MARGIN,
                   max_region_pixels: int = DEFAULT_REGION_PIXELS) -> list[str]:
    """Completes an image file (or a folder of them) and writes the results.

    Args:
      completer: the model.
      image_path: an image file, or a folder of images.
      mask_path: the mask file (or, for a folder of images, a folder of masks matched by file
        name without extension). None draws random holes as the official tool (2-4
        rectangles, sides in [32, 128] pixels, from `seed`) and also writes the mask used:
        `OUT_mask.png` beside a single output, `STEM_mask.png` in an output folder.
      out_path: output file (single image) or folder (created) for a folder of images, where
        each result is `STEM.png`.
      maxdim, postprocess, context_margin, max_region_pixels: see `Completer.complete`
        (maxdim=0: full resolution, region by region; None: the model's default).
      seed: seed of the random holes.

    Returns:
      The paths written.

    Raises:
      CompletionError: unreadable image or mask, mismatched sizes, empty mask, missing mask.
    """
    if maxdim == 0:
        _check_region_args(context_margin, max_region_pixels)
    elif maxdim is not None and maxdim < 4:
        raise CompletionError(f"maxdim must be >= 4, or 0 for full resolution, got {maxdim}")
    rng = np.random.default_rng(seed)
    if os.path.isdir(image_path):
        images = _list_images(image_path)
        if not images:
            raise CompletionError(f"{image_path}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        if mask_path is not None and not os.path.isdir(mask_path):
            raise CompletionError(f"{mask_path}: --image is a folder, so the mask must be a "
                                  "folder of masks too")
        if os.path.isfile(out_path):
            raise CompletionError(f"{out_path}: --image is a folder, so the output must be a "
                                  "folder, but this is a file")
        masks = _match_masks(images, mask_path) if mask_path else [None] * len(images)
        outs = [os.path.join(out_path, _stem(p) + ".png") for p in images]
        mask_outs = [os.path.join(out_path, _stem(p) + "_mask.png") for p in images]
    else:
        if mask_path is not None and os.path.isdir(mask_path):
            raise CompletionError(f"{mask_path}: is a folder but --image is a single file")
        images, masks, outs = [image_path], [mask_path], [out_path]
        root, _ = os.path.splitext(out_path)
        mask_outs = [root + "_mask.png"]
    # Read and check everything first, so that a bad file fails before any work is done.
    jobs = []
    for image_file, mask_file in zip(images, masks):
        image = load_image(image_file)
        if mask_file is None:
            mask = None
        else:
            mask = load_mask(mask_file)
            if mask.shape != image.shape[:2]:
                raise CompletionError(
                    f"{mask_file}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs "
                    f"from image size {image.shape[1]}x{image.shape[0]} of {image_file}")
            if not (mask >= HOLE_THRESHOLD).any():
                raise CompletionError(f"{mask_file}: empty mask (no pixel >= "
                                      f"{HOLE_THRESHOLD}); white marks the hole")
        jobs.append((image_file, mask_file, image, mask))
    written = []
    for (image_file, mask_file, image, mask), out_file, mask_out in zip(jobs, outs, mask_outs):
        if mask is None:
            mask = random_holes(image.shape[0], image.shape[1], rng,
                                hole_size=_random_hole_size(completer, image.shape[:2], maxdim))
            save_image(mask_out, mask.astype(np.uint8) * 255)
            written.append(mask_out)
        result = completer.complete(image, mask, postprocess=postprocess, maxdim=maxdim,
                                    name=image_file, mask_name=mask_file or "random holes",
                                    context_margin=context_margin,
                                    max_region_pixels=max_region_pixels)
        save_image(out_file, result)
        written.append(out_file)
    return written
