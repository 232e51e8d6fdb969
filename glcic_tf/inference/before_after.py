"""A before/after picture of held-out photos, completed by an exported model.

`write_before_after(model_dir, val_pattern, out_dir)` takes the first two photos of the held-out
shards at their own resolution (one row each), cuts an object-sized elliptical hole out of each
(centred, about a quarter of the width: the size of the training holes once the photo is scaled
to the model's `maxdim`), completes it with the SavedModel's `complete` signature through
`Completer` (what `pipelines/complete.py` does) and writes `before_after.png`: the photo with its
hole | the network alone | with the paper's post-processing | the original. `make demo` writes
it beside its run.
"""

from __future__ import annotations

import os

import numpy as np

NAME = "before_after.png"


def elliptical_hole(height: int, width: int, *, fraction: float = 0.24,
                    centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """bool [height, width]: an ellipse `fraction` of the width wide, 1.3x as tall as wide
    (clipped to 0.8 of the height), at `centre` (relative y, x)."""
    rx = max(2.0, fraction * width / 2)
    ry = min(1.3 * rx, 0.4 * height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = centre[0] * (height - 1), centre[1] * (width - 1)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _labelled_strip(images, labels, height: int = 256, pad: int = 4, header: int = 22):
    import cv2

    cells = []
    for image in images:
        scale = height / image.shape[0]
        cells.append(cv2.resize(image, (max(1, round(image.shape[1] * scale)), height),
                                interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC))
    width = sum(c.shape[1] for c in cells) + pad * (len(cells) + 1)
    sheet = np.full((header + height + 2 * pad, width, 3), 32, np.uint8)
    x = pad
    for cell, label in zip(cells, labels):
        sheet[header + pad:header + pad + height, x:x + cell.shape[1]] = cell
        cv2.putText(sheet, label, (x + 2, header - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        x += cell.shape[1] + pad
    return sheet


def first_photos(pattern: str, count: int = 2) -> list[tuple[str, np.ndarray]]:
    """[(key, uint8 [H, W, 3])] of the first `count` records of the shards, as stored."""
    import tensorflow as tf

    from glcic_tf.data import schema, shards

    files = shards.list_files(pattern)
    photos = []
    for serialized in tf.data.TFRecordDataset(files).take(count):
        example = schema.decode_example(serialized)
        photos.append((example["key"].numpy().decode("utf-8", "replace"),
                       example["image"].numpy()))
    if not photos:
        raise FileNotFoundError(f"{pattern}: no record")
    return photos


def write_before_after(model_dir: str, pattern: str, out_dir: str) -> str:
    """Writes OUT_DIR/before_after.png (see the module docstring); returns its path."""
    from glcic_tf.inference.completer import Completer
    from glcic_tf.inference.images import save_image

    completer = Completer.from_saved_model(model_dir)
    strips = []
    for _, image in first_photos(pattern):
        hole = elliptical_hole(*image.shape[:2])
        raw = completer.complete(image, hole, postprocess=False)
        post = completer.complete(image, hole, postprocess=True)
        shown = image.copy()
        shown[hole] = 255
        strips.append(_labelled_strip(
            [shown, raw, post, image],
            ["with its hole", "network alone", "+ post-processing", "original"]))
    width = max(s.shape[1] for s in strips)
    strip = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)),
                                   constant_values=32) for s in strips], axis=0)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, NAME)
    save_image(path, strip)
    return path
