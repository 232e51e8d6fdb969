"""The paper's post-processing (Section 4) of a completed image, in two implementations.

`postprocess` ("opencv", the default of `Completer.complete`): fast-marching inpainting
(`cv2.inpaint`, INPAINT_TELEA, radius 1 as the official code) of the hole, then Poisson
blending (`cv2.seamlessClone`, NORMAL_CLONE) of the completion into it, one connected component
of the hole at a time with its own centre (the official code clones all holes with one bounding
box). Images are padded so that holes touching the border blend too. Only hole pixels change.

`postprocess_in_graph` ("in-graph") runs `glcic_tf.inference.poisson.postprocess_image`
instead: the same job in stock TensorFlow ops, the picture a SavedModel exported with in-graph
post-processing serves (`docs/postprocess.md` compares the two).
"""

from __future__ import annotations

import functools

import numpy as np

from glcic_tf.inference.images import CompletionError

INPAINT_RADIUS = 1
POSTPROCESS_MODES = ("opencv", "in-graph", "none")
# Pixels of context kept around each hole, and padding added around the crop, for seamlessClone
# (it zeroes the mask's outermost pixel and needs its ROI strictly inside the image).
_CLONE_MARGIN = 2
_CLONE_PAD = 4


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


@functools.lru_cache(maxsize=None)
def _postprocess_in_graph_fn():
    import tensorflow as tf

    from glcic_tf.inference import poisson
    from glcic_tf.inference.ops import to_uint8_tf

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
