"""Torch7 test helpers: Torch's layers as naive loops straight from their definitions (no
glcic_tf code), and writing a .t7 file into a test's directory."""

import numpy as np

from glcic_tf.torch7.writer import save_t7


def naive_conv(x, w, b, stride, pad, dilation=1):
    """out[o, y, x] = b[o] + sum_{i,ky,kx} w[o, i, ky, kx] * x_pad[i, y*s + ky*d, x*s + kx*d]."""
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((c, h + 2 * pad, wd + 2 * pad))
    xp[:, pad:pad + h, pad:pad + wd] = x
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((o, oh, ow))
    for yy in range(oh):
        for xx in range(ow):
            for ky in range(k):
                for kx in range(k):
                    ty, tx = yy * stride + ky * dilation, xx * stride + kx * dilation
                    out[:, yy, xx] += w[:, :, ky, kx] @ xp[:, ty, tx]
    return out + b[:, None, None]


def naive_full_conv(x, w, b, stride, pad):
    """Torch SpatialFullConvolution: input (y, x) adds w[:, o, ky, kx] . x[:, y, x] at output
    (y*s - pad + ky, x*s - pad + kx); output size (H-1)*s - 2*pad + k."""
    c, h, wd = x.shape
    _, o, k, _ = w.shape
    oh, ow = (h - 1) * stride - 2 * pad + k, (wd - 1) * stride - 2 * pad + k
    out = np.zeros((o, oh, ow))
    for yy in range(h):
        for xx in range(wd):
            for ky in range(k):
                for kx in range(k):
                    ty, tx = yy * stride - pad + ky, xx * stride - pad + kx
                    if 0 <= ty < oh and 0 <= tx < ow:
                        out[:, ty, tx] += w[:, :, ky, kx].T @ x[:, yy, xx]
    return out + b[:, None, None]


def write_t7(tmp_path, root, name="bad.t7"):
    """Writes `root` to tmp_path/name as Torch would; returns the path."""
    path = str(tmp_path / name)
    save_t7(path, root)
    return path
