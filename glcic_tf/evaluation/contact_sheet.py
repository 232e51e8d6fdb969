"""The contact sheet: a labelled grid of images, one row per sample, one column per method.

`glcic_tf.evaluation.evaluate` writes one (contact_sheet.png) beside its report: masked input |
ours | ours + post-processing | Telea | ground truth for the first images.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *,
                  cell_size: int = 128, pad: int = 2, header: int = 20) -> np.ndarray:
    """A grid of uint8 RGB images with a label above each column.

    Layout: a `header`-pixel band with the column labels, then the cells, each resized to
    `cell_size` x `cell_size` (nearest neighbour when enlarging, area averaging when shrinking),
    separated and surrounded by `pad` pixels of dark grey. Size: width = C * cell + (C + 1) *
    pad, height = header + R * cell + (R + 1) * pad.

    Returns:
      uint8 [height, width, 3].
    """
    import cv2

    n_cols = len(labels)
    if not rows or any(len(r) != n_cols for r in rows):
        raise ValueError(f"contact_sheet: every row needs {n_cols} images (one per label)")
    width = n_cols * cell_size + (n_cols + 1) * pad
    height = header + len(rows) * cell_size + (len(rows) + 1) * pad
    sheet = np.full((height, width, 3), 32, np.uint8)
    for c, label in enumerate(labels):
        x0 = pad + c * (cell_size + pad)
        scale = 0.4
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if tw > cell_size - 4:
            scale *= (cell_size - 4) / tw
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        org = (x0 + max(0, (cell_size - tw) // 2), max(th, (header + th) // 2))
        cv2.putText(sheet, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    for r, row in enumerate(rows):
        y0 = header + pad + r * (cell_size + pad)
        for c, image in enumerate(row):
            x0 = pad + c * (cell_size + pad)
            image = np.asarray(image, np.uint8)
            interp = cv2.INTER_NEAREST if image.shape[0] <= cell_size else cv2.INTER_AREA
            cell = cv2.resize(image, (cell_size, cell_size), interpolation=interp)
            sheet[y0:y0 + cell_size, x0:x0 + cell_size] = cell
    return sheet
