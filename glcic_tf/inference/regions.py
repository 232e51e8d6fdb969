"""Full resolution (`maxdim=0`): the network completes only crops around the holes.

The completion network is fully convolutional and a hole pixel's output depends only on the
input within its receptive field, so completing a crop that holds every hole pixel plus
CONTEXT_MARGIN pixels of context on each side gives, inside the hole, the same output as a
pass over the whole image: zero padding at the crop's border cannot reach the hole. Each
hole's bounding box is grown by that margin on every side; holes whose crops overlap are merged
into one region; regions larger than a pixel budget are tiled with overlapping context
(`plan_regions`), and `complete_regions` runs the passes and post-processes a crop around each
region too. Crops start on multiples of 4 so that the two stride-2 layers see the same pixel
phase as in a whole-image pass (the outputs are then bit-identical on CPU in practice).

Memory depends on the holes, not on the image: a 4000x3000 photo with a 300x300 hole runs one
~608x608 pass (docs/inference.md has the measured peaks).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from glcic_tf.inference import postprocessing
from glcic_tf.inference.images import CompletionError
from glcic_tf.inference.ops import CompleteFn

# How far (pixels) an output pixel's receptive field reaches on one side. The field is 299-303
# px wide (`models.receptive_field()` counts 301) and not centred on the pixel:
# strided 'same' convolutions pad 0 before and 1 after (the "torch" padding mirrors that), so
# the reach is 147-153 px depending on the pixel's position mod 4 and the side, measured by
# tests/inference/test_regions.py. 153 covers every pixel, side and padding mode.
CONTEXT_MARGIN = 153
# Most pixels one network pass sees; larger regions are tiled. It bounds the memory of a pass
# (per-pixel cost and peaks measured by glcic_tf.benchmarks.large_image: docs/inference.md).
DEFAULT_REGION_PIXELS = 1448 * 1448
# Context kept around each region's holes for post-processing: Telea with radius 1 reads one
# pixel around the hole, seamlessClone two (`postprocessing._CLONE_MARGIN`).
_POSTPROCESS_MARGIN = 8

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1) in image pixels, ends exclusive


@dataclasses.dataclass(frozen=True)
class Tile:
    """One network pass of a region.

    Attributes:
      crop: the image box the network sees (clipped to the image; starts on multiples of 4;
        padded by mirroring, hole and image alike, up to multiples of 4 when it ends at an
        image border that is not).
      keep: the box whose hole pixels take this pass's output; `crop` extends it by the
        context margin on every side (or to the image border).
    """

    crop: Box
    keep: Box

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input, the crop padded to multiples of 4."""
        y0, x0, y1, x1 = self.crop
        return _ceil4(y1 - y0), _ceil4(x1 - x0)


@dataclasses.dataclass(frozen=True)
class Region:
    """Holes completed together: connected components whose context boxes overlap.

    Attributes:
      holes: bounding box of the region's hole pixels.
      num_components: connected components (8-connectivity) merged into the region.
      tiles: its network passes; one unless its crop has more than the pixel budget.
    """

    holes: Box
    num_components: int
    tiles: tuple[Tile, ...]

    @property
    def crop(self) -> Box:
        """Union of the tiles' crops."""
        boxes = [t.crop for t in self.tiles]
        return (min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes))


def _floor4(value: int) -> int:
    return value // 4 * 4


def _ceil4(value: int) -> int:
    return -(-value // 4) * 4


def _context_box(box: Box, margin: int, height: int, width: int) -> Box:
    """`box` grown by `margin`, start rounded down and end up to multiples of 4, clipped."""
    y0, x0, y1, x1 = box
    return (max(0, _floor4(y0 - margin)), max(0, _floor4(x0 - margin)),
            min(height, _ceil4(y1 + margin)), min(width, _ceil4(x1 + margin)))


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _merge_overlapping(boxes: Sequence[Box], margin: int, height: int,
                       width: int) -> list[tuple[Box, int]]:
    """Merges boxes whose context boxes overlap, until no two merged boxes' context boxes do.

    Returns:
      (union box, number of input boxes merged) per group, sorted by position.
    """
    groups = [(tuple(int(v) for v in box), 1) for box in boxes]
    while True:
        ctx = [_context_box(box, margin, height, width) for box, _ in groups]
        parent = list(range(len(groups)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        # Sweep over rows: `active` holds the boxes that reach below the current box's top.
        merged = False
        active: list[int] = []
        for i in sorted(range(len(groups)), key=lambda k: ctx[k][0]):
            active = [j for j in active if ctx[j][2] > ctx[i][0]]
            for j in active:
                if ctx[j][1] < ctx[i][3] and ctx[i][1] < ctx[j][3]:
                    root_i, root_j = find(i), find(j)
                    if root_i != root_j:
                        parent[root_i] = root_j
                        merged = True
            active.append(i)
        if not merged:
            return sorted(groups)
        combined: dict[int, tuple[Box, int]] = {}
        for i, (box, count) in enumerate(groups):
            root = find(i)
            if root in combined:
                other, other_count = combined[root]
                combined[root] = (_union(other, box), other_count + count)
            else:
                combined[root] = (box, count)
        groups = list(combined.values())


def _hole_bbox(hole: np.ndarray, box: Box) -> Box | None:
    """Bounding box of the hole pixels inside `box`, or None when there are none."""
    y0, x0, y1, x1 = box
    sub = hole[y0:y1, x0:x1]
    rows = np.flatnonzero(sub.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(sub.any(axis=0))
    return (y0 + int(rows[0]), x0 + int(cols[0]), y0 + int(rows[-1]) + 1,
            x0 + int(cols[-1]) + 1)


def _axis_cores(start: int, end: int, crop_size: int, tile_size: int,
                margin4: int) -> list[tuple[int, int]]:
    """Splits the hole extent [start, end) into cores whose crops are at most `tile_size`."""
    if crop_size <= tile_size:
        return [(start, end)]
    core = tile_size - 2 * margin4
    first = _floor4(start)
    return [(max(s, start), min(s + core, end)) for s in range(first, end, core)]


def check_region_args(margin: int, max_pixels: int) -> None:
    """Raises CompletionError unless `margin` >= 0 and `max_pixels` holds one tile with it."""
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise CompletionError(f"context margin must be an integer >= 0, got {margin!r}")
    smallest = (2 * _ceil4(margin) + 4) ** 2
    if (isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
            or max_pixels < smallest):
        raise CompletionError(
            f"max_region_pixels must be an integer >= {smallest} (a tile of side "
            f"{2 * _ceil4(margin) + 4} px: a 4 px core plus the {margin} px context margin on "
            f"each side, rounded to multiples of 4), got {max_pixels!r}")


def plan_regions(hole: np.ndarray, *, margin: int = CONTEXT_MARGIN,
                 max_pixels: int = DEFAULT_REGION_PIXELS) -> list[Region]:
    """The network passes that complete `hole` at full resolution.

    Connected components of the hole (8-connectivity) become regions; regions whose context
    boxes (hole bounding box grown by `margin`, rounded out to multiples of 4, clipped to the
    image) overlap are merged, repeatedly, so no two regions' crops overlap and no pixel is
    computed twice. A region whose crop exceeds `max_pixels` is tiled: its hole bounding box
    is cut into cores (starting on multiples of 4), each completed from a crop of the core
    grown by the margin, and each output is kept on its core only. Since every kept pixel has
    `margin` pixels of context in its own crop, tiles need no blending: with
    margin >= CONTEXT_MARGIN the seams are invisible (outputs equal a whole-image pass).
    Cores without hole pixels are skipped and each core is shrunk to its hole pixels.

    Args:
      hole: bool [H, W], True = hole.
      margin: context pixels on each side of the holes (>= CONTEXT_MARGIN for outputs equal
        to a whole-image pass; less is faster but changes the completion).
      max_pixels: most pixels of one network input (its memory bound).

    Returns:
      Regions sorted by position (top, then left).

    Raises:
      CompletionError: bad margin or a budget too small for one tile with that margin.
    """
    import cv2

    check_region_args(margin, max_pixels)
    hole = np.asarray(hole, bool)
    if hole.ndim != 2:
        raise CompletionError(f"hole must be [H, W], got shape {hole.shape}")
    height, width = hole.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(hole).view(np.uint8), connectivity=8)
    boxes = [(int(y), int(x), int(y + h), int(x + w)) for x, y, w, h in stats[1:count, :4]]
    margin4 = _ceil4(margin)
    tile_side = _floor4(math.isqrt(int(max_pixels)))
    regions = []
    for box, num in _merge_overlapping(boxes, margin, height, width):
        crop = _context_box(box, margin, height, width)
        crop_h, crop_w = _ceil4(crop[2] - crop[0]), _ceil4(crop[3] - crop[1])
        if crop_h * crop_w <= max_pixels:
            regions.append(Region(box, num, (Tile(crop, box),)))
            continue
        # Tiles span the whole crop along an axis that fits in a square tile, so that long
        # thin regions take fewer, longer tiles.
        tile_h = tile_w = tile_side
        if crop_h <= tile_side:
            tile_w = _floor4(max_pixels // crop_h)
        elif crop_w <= tile_side:
            tile_h = _floor4(max_pixels // crop_w)
        tiles = []
        for ky0, ky1 in _axis_cores(box[0], box[2], crop_h, tile_h, margin4):
            for kx0, kx1 in _axis_cores(box[1], box[3], crop_w, tile_w, margin4):
                keep = _hole_bbox(hole, (ky0, kx0, ky1, kx1))
                if keep is not None:
                    tiles.append(Tile(_context_box(keep, margin, height, width), keep))
        regions.append(Region(box, num, tuple(tiles)))
    return regions


def _pad_to_4(array: np.ndarray) -> np.ndarray:
    """Mirror-pads rows and columns at the end up to multiples of 4 (no-op when they are)."""
    pad_h, pad_w = (-array.shape[0]) % 4, (-array.shape[1]) % 4
    if not (pad_h or pad_w):
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="symmetric")


def complete_regions(image: np.ndarray, hole: np.ndarray, complete_fn: CompleteFn, *,
                     margin: int = CONTEXT_MARGIN, max_pixels: int = DEFAULT_REGION_PIXELS,
                     postprocess: bool = False,
                     regions: Sequence[Region] | None = None) -> np.ndarray:
    """Completes an image at full resolution, one crop around each group of holes at a time.

    See `plan_regions` for the crops. Each crop's network input is built from the whole hole
    mask (holes of other regions inside the context are holes there too, as in a whole-image
    pass); a crop ending at an image border whose size is not a multiple of 4 is padded by
    mirroring the image and the hole alike (so no hole content leaks in). Only the hole
    pixels of each tile's `keep` box are written: pixels outside the hole are the input's,
    bit for bit. Memory is bounded by the largest crop (`max_pixels`), the image and one
    copy of it.

    Args:
      image: [H, W, 3], uint8 or float32 in [0, 1].
      hole: bool [H, W], True = hole.
      complete_fn: batched composite (`ops.keras_complete_fn` or the SavedModel's `complete`
        signature): float32 image [1, h, w, 3] in [0, 1], hole [1, h, w, 1] -> [1, h, w, 3].
      margin, max_pixels: see `plan_regions`.
      postprocess: the paper's post-processing (`postprocessing.postprocess`), on a crop
        around each group of holes (uint8 images only); gives the same pixels as
        post-processing the whole image.
      regions: a plan from `plan_regions(hole, ...)` (default: made here).

    Returns:
      The completed image, same shape and dtype as `image`; uint8 rounds to nearest.

    Raises:
      CompletionError: bad shapes or dtypes, bad margin or budget.
    """
    image = np.asarray(image)
    hole = np.asarray(hole, bool)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != hole.shape:
        raise CompletionError(f"expected an image [H, W, 3] and a hole [H, W] of the same size, "
                              f"got {image.shape} and {hole.shape}")
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and image.dtype != np.float32:
        raise CompletionError(f"expected a uint8 or float32 image, got dtype {image.dtype}")
    if postprocess and not is_uint8:
        raise CompletionError("post-processing needs a uint8 image")
    if regions is None:
        regions = plan_regions(hole, margin=margin, max_pixels=max_pixels)
    height, width = hole.shape
    out = image.copy()
    for region in regions:
        for tile in region.tiles:
            y0, x0, y1, x1 = tile.crop
            crop = _pad_to_4(image[y0:y1, x0:x1])
            crop_hole = _pad_to_4(hole[y0:y1, x0:x1])
            x = crop.astype(np.float32) / 255.0 if is_uint8 else crop
            result = np.asarray(complete_fn(x[np.newaxis],
                                            crop_hole[np.newaxis, ..., np.newaxis]
                                            .astype(np.float32)))[0]
            ky0, kx0, ky1, kx1 = tile.keep
            result = np.clip(result[ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0], 0.0, 1.0)
            if is_uint8:  # as ops.to_uint8_tf: float32 x * 255, rounded half to even
                result = np.round(result * np.float32(255.0)).astype(np.uint8)
            keep_hole = hole[ky0:ky1, kx0:kx1]
            out[ky0:ky1, kx0:kx1][keep_hole] = result[keep_hole]
    if postprocess:
        for box, _ in _merge_overlapping([r.holes for r in regions], _POSTPROCESS_MARGIN,
                                         height, width):
            y0, x0, y1, x1 = _context_box(box, _POSTPROCESS_MARGIN, height, width)
            out[y0:y1, x0:x1] = postprocessing.postprocess(out[y0:y1, x0:x1],
                                                           hole[y0:y1, x0:x1])
    return out
