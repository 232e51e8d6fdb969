"""The classical baselines every completion is compared with, and the 8-bit convention.

Everything glcic_tf scores is an 8-bit image (`to_uint8`: round, then clip to 0-255), so the
network and the classical inpainters are compared on the pictures a user would save.
`inpaint_opencv` runs OpenCV's fast marching (Telea) or Navier-Stokes inpainting on one such
image. Both the held-out evaluation (`glcic_tf.evaluation.evaluate`) and the learning curve
measured during training (`glcic_tf.evaluation.curve`) use them, so their figures agree.
"""

from __future__ import annotations

import numpy as np

# Radius of the OpenCV baselines (pipelines/evaluate.py --inpaint-radius); the paper's
# post-processing keeps its own radius 1.
INPAINT_RADIUS = 5


def inpaint_opencv(masked: np.ndarray, hole: np.ndarray, method: str,
                   radius: int = INPAINT_RADIUS) -> np.ndarray:
    """OpenCV inpainting of one uint8 [H, W, 3] image; `hole` bool [H, W]; method "telea"/"ns"."""
    import cv2

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"method must be 'telea' or 'ns', got {method!r}")
    return cv2.inpaint(np.ascontiguousarray(masked, np.uint8), hole.astype(np.uint8) * 255,
                       radius, flags[method])


def to_uint8(x) -> np.ndarray:
    """Float images in [0, 1] (any shape) -> uint8 0-255: rounded (half to even), clipped."""
    return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)
