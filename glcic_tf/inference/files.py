"""Completing image files and folders, as `pipelines/complete.py` does.

`complete_files` reads an image (or a folder of images) and its mask (or a folder of masks
matched by file name), checks every pair before any work is done, completes each with a
`Completer` and writes the results. Without a mask it draws random rectangular holes as the
official tool does (`random_holes`), scaled to the model's training holes, and writes the mask
it used beside the result.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from glcic_tf.inference.completer import Completer
from glcic_tf.inference.images import HOLE_THRESHOLD, CompletionError, load_image, load_mask
from glcic_tf.inference.images import save_image
from glcic_tf.inference.regions import CONTEXT_MARGIN, DEFAULT_REGION_PIXELS, check_region_args

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
RANDOM_HOLES = (2, 4)
RANDOM_HOLE_SIZE = (32, 128)


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
        check_region_args(context_margin, max_region_pixels)
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
