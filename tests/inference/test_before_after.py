"""The before/after picture make_demo writes (glcic_tf.inference.before_after)."""

import numpy as np
import pytest

from glcic_tf.inference import before_after
from glcic_tf.inference.images import load_image

from helpers.runs import IMAGES, write_shards


def test_elliptical_hole_is_centred_and_sized_from_the_width():
    hole = before_after.elliptical_hole(200, 300)
    rx = 0.24 * 300 / 2
    ry = 1.3 * rx  # 46.8 px: under 0.4 x 200, not clipped
    assert hole.sum() == pytest.approx(np.pi * rx * ry, rel=0.02)
    ys, xs = np.nonzero(hole)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(99.5, abs=1)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(149.5, abs=1)
    assert xs.max() - xs.min() + 1 == pytest.approx(2 * rx, abs=2)
    # A wide, short photo: the height is clipped to 0.8 of the image.
    flat = before_after.elliptical_hole(40, 400)
    assert np.nonzero(flat)[0].max() - np.nonzero(flat)[0].min() + 1 <= 0.8 * 40 + 1
    assert not flat[0].any() and not flat[-1].any()
    # Off-centre, and never smaller than a few pixels on a tiny image.
    corner = before_after.elliptical_hole(100, 100, centre=(0.0, 0.0))
    assert corner[0, 0] and not corner[99, 99]
    assert before_after.elliptical_hole(8, 8).sum() >= 9


def test_first_photos_reads_records_as_stored_and_refuses_empty_shards(tmp_path):
    pattern = str(tmp_path / "val-00000-of-00001.tfrecord")
    write_shards(pattern)
    photos = before_after.first_photos(pattern, count=IMAGES + 5)
    assert [key for key, _ in photos] == [f"img{i}" for i in range(IMAGES)]
    assert all(image.shape == (40, 48, 3) and image.dtype == np.uint8 for _, image in photos)
    assert len(before_after.first_photos(pattern)) == 2
    empty = tmp_path / "empty-00000-of-00001.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="empty-00000-of-00001.tfrecord: no record"):
        before_after.first_photos(str(empty))


def test_write_before_after_rows_of_hole_completions_and_original(tiny_exports, tmp_path):
    pattern = str(tmp_path / "val-00000-of-00001.tfrecord")
    write_shards(pattern)
    path = before_after.write_before_after(tiny_exports["fp32"], pattern, str(tmp_path / "out"))
    assert path == str(tmp_path / "out" / before_after.NAME)
    sheet = load_image(path)
    # Two photos, one row each: a 22 px header, 256 px cells, 4 px padding around them.
    assert sheet.shape[0] == 2 * (22 + 256 + 2 * 4)
    # Four cells per row, each 40x48 scaled to 256 px high (307 px wide), 4 px apart.
    cell_w = round(48 * 256 / 40)
    assert sheet.shape[1] == 4 * cell_w + 5 * 4
    top = sheet[22 + 4:22 + 4 + 256]
    cells = [top[:, 4 + i * (cell_w + 4):4 + i * (cell_w + 4) + cell_w] for i in range(4)]
    centre = (slice(118, 138), slice(cell_w // 2 - 10, cell_w // 2 + 10))
    assert (cells[0][centre] == 255).all()  # the hole, shown white
    assert not (cells[1][centre] == 255).all()  # filled by the network
    # Outside the hole every cell is the photo (the same resize of the same pixels).
    corner = (slice(0, 30), slice(0, 30))
    for cell in cells[1:]:
        assert np.abs(cell[corner].astype(int) - cells[3][corner]).max() <= 1
