"""Batch norm folded into the convolutions: the completion network for inference only.

In inference mode a batch norm after a convolution is an affine map per channel, so it can be
folded into the convolution's kernel and bias (`FoldedNetwork`): the same network with 16
fewer element-wise passes over large activations, and convolution + bias + ReLU fused by
oneDNN. It is also how the network computes in bfloat16: bf16 kernels and biases, without
casting every activation to float32 and back around Keras' batch norm.

Precision: with bfloat16 the convolutions in BFLOAT16_FLOAT32_LAYERS (conv1, conv2, conv10 and
output_conv: 11.6 of 130 GMAC at 512x512, 9%) keep float32. conv1 sees the raw image (rounding
its input and its 4-channel kernel costs the most) and output_conv writes the pixels; conv2 and
conv10 add a margin. That keeps the output above 40 dB PSNR against float32 for a fraction of
the float32 cost; `float32_layers=()` gives an all-bf16 network (fastest, lower PSNR). The
measurements behind this choice are in docs/inference.md.

`fold_batch_norm(model, dtype)` builds a `FoldedNetwork` and checks it against the Keras model;
the Completer (`glcic_tf.inference.completer`) and bf16 exports (`glcic_tf.inference.export`)
use it.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

# Convolutions that compute in float32 when the precision is "bfloat16" (see the docstring).
BFLOAT16_FLOAT32_LAYERS = ("conv1", "conv2", "conv10", "output_conv")


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
                 float32_layers: Sequence[str] = (), live: bool = False):
        import keras
        import tensorflow as tf

        self.compute_dtype = tf.as_dtype(compute_dtype)
        if self.compute_dtype not in (tf.float32, tf.bfloat16):
            raise ValueError(f"compute_dtype must be float32 or bfloat16, got {compute_dtype!r}")
        if live and self.compute_dtype != tf.float32:
            raise ValueError("live folding is float32 only (bfloat16 folds into bf16 copies)")
        self.name = model.name
        # live: fold inside every call from the Keras model's own variables (`source_model`),
        # so a SavedModel of it saves the Keras variables, under the same names as the Keras
        # model's export, and can be trained from; else folded copies (`variables`).
        self.source_model = model if live else None
        self.variables = []  # stored: kernel and bias per convolution; live: the model's
        self.layer_dtypes: dict[str, str] = {}
        self._convs = []  # (Keras convolution, its batch norm or None) per convolution
        self._steps = []  # (kind, attributes, convolution index, dtype) in call order
        from glcic_tf.networks import models as models_lib

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
                convs.append(["deconv", layer, None, {"strides": layer.strides,
                                                      "padding": layer.padding}, layer.name])
            elif isinstance(layer, keras.layers.Conv2D):
                convs.append(["conv", layer, None, {"strides": layer.strides,
                                                    "padding": layer.padding,
                                                    "dilation": layer.dilation_rate},
                              layer.name])
            elif isinstance(layer, keras.layers.BatchNormalization):
                if not convs or convs[-1][0] not in ("conv", "deconv") or convs[-1][2]:
                    raise NotImplementedError(f"{layer.name}: batch norm not after a conv")
                convs[-1][2] = layer
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
        for kind, conv, norm, attrs, name in convs:
            index = None
            if kind in ("conv", "deconv"):
                dtype = tf.float32 if name in float32_layers else self.compute_dtype
                self.layer_dtypes[name] = dtype.name
                index = len(self._convs)
                self._convs.append((conv, norm))
                if not live:
                    kernel, bias = _folded(kind, conv, norm, np)
                    self.variables.append(tf.Variable(kernel, dtype=dtype, trainable=False))
                    self.variables.append(tf.Variable(bias, dtype=dtype, trainable=False))
            # Padding and activations run in the dtype of the convolution they belong to.
            self._steps.append((kind, attrs, index, dtype))
        if live:
            self.variables = list(model.variables)

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
                kernel, bias = self._kernel_bias(kind, index)
                x = tf.nn.convolution(x, kernel, strides=attrs["strides"],
                                      padding=attrs["padding"].upper(),
                                      dilations=attrs["dilation"])
                x = tf.nn.bias_add(x, bias)
            elif kind == "deconv":
                kernel, bias = self._kernel_bias(kind, index)
                shape = tf.shape(x)
                sy, sx = attrs["strides"]
                out_shape = tf.stack([shape[0], shape[1] * sy, shape[2] * sx,
                                      tf.shape(kernel)[2]])
                x = tf.nn.conv2d_transpose(x, kernel, out_shape, strides=attrs["strides"],
                                           padding=attrs["padding"].upper())
                x = tf.nn.bias_add(x, bias)
            elif kind == "relu":
                x = tf.nn.relu(x)
            elif kind == "sigmoid":
                x = tf.sigmoid(tf.cast(x, tf.float32))
            elif kind == "residual":
                x = attrs["layer"]([image, tf.cast(x, tf.float32)])
        return tf.cast(x, tf.float32)

    def _kernel_bias(self, kind: str, index: int):
        """The folded kernel and bias of the convolution at `index`: stored, or (live) folded
        now from the Keras layers' variables."""
        import tensorflow as tf

        if self.source_model is None:
            return self.variables[2 * index], self.variables[2 * index + 1]
        return _folded(kind, *self._convs[index], tf)


def _folded(kind: str, conv, norm, xp):
    """Kernel and bias of `conv` with the inference-mode batch norm `norm` (or None) folded in.

    `xp` is numpy (values now) or tensorflow (ops on the variables, for live folding); both
    compute in float32 with the same operations, so the two foldings agree exactly.
    """
    value = (lambda v: v.numpy()) if xp is np else xp.convert_to_tensor
    kernel, bias = value(conv.kernel), value(conv.bias)
    if norm is None:
        return kernel, bias
    scale = 1.0 / xp.sqrt(value(norm.moving_variance) + np.float32(norm.epsilon))
    if norm.gamma is not None:
        scale = scale * value(norm.gamma)
    shift = -value(norm.moving_mean) * scale
    if norm.beta is not None:
        shift = shift + value(norm.beta)
    # Output channels: last axis of a Conv2D kernel, axis 2 of a transposed one.
    kernel = kernel * (scale if kind == "conv" else scale[:, None])
    return kernel, bias * scale + shift


def default_float32_layers(compute_dtype: str) -> tuple[str, ...]:
    """The layers kept in float32 by default: `BFLOAT16_FLOAT32_LAYERS` for bfloat16, else ()."""
    return BFLOAT16_FLOAT32_LAYERS if str(compute_dtype) == "bfloat16" else ()


def fold_batch_norm(model, compute_dtype: str = "float32", *, check: bool = True,
                    float32_layers: Sequence[str] | None = None, live: bool = False):
    """`FoldedNetwork` of a Keras completion network, or the Keras model if it cannot be folded.

    Args:
      model: the completion network (float32 Keras model).
      compute_dtype: "float32" or "bfloat16".
      check: compare with the Keras model on a random 32x32 input; a mismatch is a bug and
        raises RuntimeError.
      float32_layers: with bfloat16, the convolutions (layer names) that compute in float32;
        None = `default_float32_layers(compute_dtype)` (`BFLOAT16_FLOAT32_LAYERS`), () = all
        bfloat16.
      live: float32 only: fold inside every call from the Keras model's variables instead of
        into copies (what float32 exports do, so their variables stay trainable).

    Returns:
      A callable `net(inputs, training=False)`; the Keras model itself (with a warning) when its
      layers are not the ones `FoldedNetwork` knows.

    Raises:
      ValueError: a name in `float32_layers` is not a convolution of the model.
    """
    if float32_layers is None:
        float32_layers = default_float32_layers(compute_dtype)
    try:
        folded = FoldedNetwork(model, compute_dtype, float32_layers, live=live)
    except NotImplementedError as e:
        logging.getLogger(__name__).warning("batch norm not folded (%s); using the Keras model", e)
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
