"""Image-completion metrics and their summaries: L1, PSNR, SSIM, confidence intervals, hole bins.

Conventions: images are float arrays in [0, 1], one image [H, W, C] or a batch [B, H, W, C];
masks are [H, W, 1] / [B, H, W, 1] (or without the channel axis) with 1 = hole, as everywhere in
glcic_tf. Every metric returns one value per image: a Python float for one image, a float64
numpy array [B] for a batch.

* `l1_255`: mean absolute error on the 0-255 scale, over the whole image or only inside the
  hole (the mean over hole pixels and channels).
* `psnr`: `tf.image.psnr` with max_val 1.0 (20 dB at MSE 0.01; +inf for identical images).
* `ssim`: `tf.image.ssim` with max_val 1.0 and TensorFlow's defaults (11x11 Gaussian window,
  sigma 1.5, k1 0.01, k2 0.03), so images need sides >= 11.

`mean_ci` summarises values with a Student-t 95% confidence interval of the mean;
`hole_area_bin` names the 10%-wide hole-area bins the irregular-mask literature reports
(Liu et al. 2018: 0-10%, 10-20%, ..., 50-60%; larger holes go to ">=60%").
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Upper edges (fractions of the image area) of the hole-area bins; the last bin is open.
HOLE_AREA_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def _as_batch(x, name: str) -> tuple[np.ndarray, bool]:
    """(float64 array [B, H, W, C], whether the input was a single image)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3:
        return a[np.newaxis], True
    if a.ndim == 4:
        return a, False
    raise ValueError(f"{name}: expected an image [H, W, C] or a batch [B, H, W, C], got shape "
                     f"{a.shape}")


def _result(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def hole_fraction(mask) -> float | np.ndarray:
    """The share of hole pixels (mask >= 0.5): a float for one mask ([H, W] or [H, W, 1]), a
    float64 array [B] for a batch [B, H, W, 1]."""
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim == 2 or (m.ndim == 3 and m.shape[-1] == 1):
        return float(np.mean(m >= 0.5))
    if m.ndim == 4 and m.shape[-1] == 1:
        return np.mean((m >= 0.5).reshape(m.shape[0], -1), axis=1)
    raise ValueError(f"mask: expected [H, W], [H, W, 1] or [B, H, W, 1], got shape {m.shape}")


def l1_255(a, b, mask=None) -> float | np.ndarray:
    """Mean absolute error on the 0-255 scale, per image.

    Args:
      a, b: images in [0, 1], [H, W, C] or [B, H, W, C].
      mask: None for the whole image; else the hole ([H, W, 1], [B, H, W, 1] or without the
        channel axis), and the error is the mean over hole pixels and channels. An image
        whose mask is empty gets NaN.

    Returns:
      A float for one image, a float64 array [B] for a batch.
    """
    x, single = _as_batch(a, "a")
    y, _ = _as_batch(b, "b")
    _check_pair(x, y)
    err = np.abs(x - y) * 255.0
    if mask is None:
        return _result(err.reshape(err.shape[0], -1).mean(axis=1), single)
    m = np.asarray(mask, dtype=np.float64)
    if single and m.ndim == 2:
        m = m[np.newaxis, ..., np.newaxis]
    elif single and m.ndim == 3:
        m = m[np.newaxis]
    elif not single and m.ndim == 3:
        m = m[..., np.newaxis]
    if m.ndim != 4 or m.shape[:3] != x.shape[:3] or m.shape[3] != 1:
        raise ValueError(f"mask: expected shape {x.shape[:3] + (1,)} (or without the channel "
                         f"axis), got {np.asarray(mask).shape}")
    weight = (m >= 0.5).astype(np.float64)
    total = (err * weight).reshape(err.shape[0], -1).sum(axis=1)
    count = weight.reshape(weight.shape[0], -1).sum(axis=1) * x.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return _result(values, single)


def psnr(a, b, max_val: float = 1.0) -> float | np.ndarray:
    """Peak signal-to-noise ratio in dB per image (`tf.image.psnr`); +inf for identical images."""
    import tensorflow as tf

    x, single = _as_batch(a, "a")
    y, _ = _as_batch(b, "b")
    _check_pair(x, y)
    values = tf.image.psnr(tf.constant(x, tf.float32), tf.constant(y, tf.float32),
                           max_val=max_val).numpy().astype(np.float64)
    return _result(values, single)


def ssim(a, b, max_val: float = 1.0) -> float | np.ndarray:
    """Structural similarity per image (`tf.image.ssim`, TensorFlow's default window).

    Raises:
      ValueError: an image side is below 11 pixels (the Gaussian window's size).
    """
    import tensorflow as tf

    x, single = _as_batch(a, "a")
    y, _ = _as_batch(b, "b")
    _check_pair(x, y)
    if min(x.shape[1:3]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels, got {x.shape[1:3]}")
    values = tf.image.ssim(tf.constant(x, tf.float32), tf.constant(y, tf.float32),
                           max_val=max_val).numpy().astype(np.float64)
    return _result(values, single)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean, Student-t confidence interval of the mean, standard deviation and count.

    Non-finite values (NaN, +-inf) are left out and counted in "dropped". With fewer than two
    values the interval collapses to the mean.

    Returns:
      {"mean", "ci_low", "ci_high", "std", "count", "dropped"} (floats rounded to 6 places;
      mean and bounds None when there is no finite value).
    """
    from scipy import stats

    v = np.asarray(list(values), dtype=np.float64)
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    out = {"count": n, "dropped": int(v.size - n)}
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "std": None, **out}
    mean = float(finite.mean())
    std = float(finite.std(ddof=1)) if n > 1 else 0.0
    half = 0.0
    if n > 1 and std > 0:
        half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n))
    return {"mean": round(mean, 6), "ci_low": round(mean - half, 6),
            "ci_high": round(mean + half, 6), "std": round(std, 6), **out}


def hole_area_bin(fraction: float, edges: Sequence[float] = HOLE_AREA_EDGES) -> str:
    """The bin label of a hole-area fraction: "0-10%", "10-20%", ..., ">=60%".

    Bins are half-open on the left: (lo, hi], with 0 in the first bin.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"hole fraction must be in [0, 1], got {fraction}")
    low = 0.0
    for high in edges:
        if fraction <= high + 1e-12:
            return f"{round(low * 100)}-{round(high * 100)}%"
        low = high
    return f">={round(edges[-1] * 100)}%"


def hole_area_bins(edges: Sequence[float] = HOLE_AREA_EDGES) -> list[str]:
    """All bin labels in order."""
    labels, low = [], 0.0
    for high in edges:
        labels.append(f"{round(low * 100)}-{round(high * 100)}%")
        low = high
    return labels + [f">={round(edges[-1] * 100)}%"]
