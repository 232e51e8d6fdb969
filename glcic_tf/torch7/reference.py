"""A NumPy forward pass of the Torch7 completion network with Torch's own layer semantics.

Written from the Torch definitions (cross-correlation with symmetric zero padding,
SpatialFullConvolution's scatter, batch norm from running statistics), independently of Keras,
so the importer can check the Keras network it built against it (`importer.verify_import`), and
`glcic_tf.torch7.synthetic` can calibrate its batch-norm statistics. float64 throughout; layout
(N, C, H, W) as in Torch.
"""

from __future__ import annotations

import numpy as np

from glcic_tf.torch7.completionnet import TorchCompletionNet


def torch_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, stride: int = 1,
                 pad: int = 0, dilation: int = 1) -> np.ndarray:
    """Torch SpatialConvolution / SpatialDilatedConvolution: x (N, C, H, W), weight
    [out, in, kh, kw] (cross-correlation, zero padding `pad` on every side)."""
    n, _, h, w = x.shape
    _, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, oh, ow, weight.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dilation:i * dilation + (oh - 1) * stride + 1:stride,
                       j * dilation:j * dilation + (ow - 1) * stride + 1:stride]
            out += np.tensordot(patch, weight[:, :, i, j], axes=([1], [1]))
    return out.transpose(0, 3, 1, 2) + bias[None, :, None, None]


def torch_full_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, stride: int = 2,
                      pad: int = 1, adj: int = 0) -> np.ndarray:
    """Torch SpatialFullConvolution: weight [in, out, kh, kw]; every input pixel (y, x) adds
    `x[c, y, x] * weight[c, :, i, j]` at output (y * stride - pad + i, x * stride - pad + j);
    output size (H - 1) * stride - 2 * pad + kh + adj."""
    n, _, h, w = x.shape
    _, cout, kh, kw = weight.shape
    canvas = np.zeros((n, (h - 1) * stride + kh + adj, (w - 1) * stride + kw + adj, cout))
    for i in range(kh):
        for j in range(kw):
            canvas[:, i:i + (h - 1) * stride + 1:stride, j:j + (w - 1) * stride + 1:stride] += (
                np.tensordot(x, weight[:, :, i, j], axes=([1], [0])))
    oh = (h - 1) * stride - 2 * pad + kh + adj
    ow = (w - 1) * stride - 2 * pad + kw + adj
    out = canvas[:, pad:pad + oh, pad:pad + ow]
    return out.transpose(0, 3, 1, 2) + bias[None, :, None, None]


def torch_batch_norm(x: np.ndarray, arrays: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """SpatialBatchNormalization in evaluation mode (running statistics)."""
    def c(v):
        return v[None, :, None, None]

    return ((x - c(arrays["running_mean"])) / np.sqrt(c(arrays["running_var"]) + eps)
            * c(arrays["weight"]) + c(arrays["bias"]))


def reference_forward(net: TorchCompletionNet, x: np.ndarray) -> np.ndarray:
    """Runs the Torch model in evaluation mode in NumPy (float64): x (N, 4, H, W), Torch's input
    `cat(image - mean with holes zeroed, mask)`; returns (N, 3, H, W) in [0, 1]."""
    x = np.asarray(x, np.float64)
    for layer in net.layers:
        a = layer.arrays
        if layer.kind == "conv":
            x = torch_conv2d(x, a["weight"], a["bias"], stride=layer.stride, pad=layer.pad,
                             dilation=layer.dilation)
        elif layer.kind == "deconv":
            x = torch_full_conv2d(x, a["weight"], a["bias"], stride=layer.stride, pad=layer.pad)
        elif layer.kind == "bn":
            x = torch_batch_norm(x, a, layer.eps)
        elif layer.kind == "relu":
            x = np.maximum(x, 0.0)
        elif layer.kind == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
    return x
