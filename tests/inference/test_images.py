"""Masks from files: gray, RGB, RGBA, gray+alpha and palette masks give the same hole."""

import numpy as np
from PIL import Image

from glcic_tf.inference import images

from helpers.inference import gradient_photo, save_png


def test_gray_rgb_rgba_la_and_palette_masks_give_the_same_hole(tmp_path, completer):
    hole = np.zeros((32, 40), bool)
    hole[4:20, 8:30] = True
    white = np.where(hole, 255, 0).astype(np.uint8)
    files = {
        "gray": save_png(tmp_path / "gray.png", white),
        "rgb": save_png(tmp_path / "rgb.png", np.repeat(white[..., None], 3, -1)),
        # white strokes on a transparent layer (colour under transparent pixels is white too)
        "rgba": save_png(tmp_path / "rgba.png", np.dstack([np.full((32, 40, 3), 255, np.uint8),
                                                           white])),
        "la": save_png(tmp_path / "la.png", np.dstack([np.full((32, 40), 255, np.uint8),
                                                       white]), "LA"),
    }
    Image.fromarray(white).convert("P").save(tmp_path / "p.png")
    files["palette"] = str(tmp_path / "p.png")
    image = gradient_photo(32, 40)
    reference = completer.complete(image, hole, postprocess=False)
    for name, path in files.items():
        mask = images.load_mask(path)
        assert mask.shape == (32, 40) and mask.dtype == np.float32, name
        np.testing.assert_array_equal(mask >= images.HOLE_THRESHOLD, hole, err_msg=name)
        np.testing.assert_array_equal(completer.complete(image, mask, postprocess=False),
                                      reference, err_msg=name)
