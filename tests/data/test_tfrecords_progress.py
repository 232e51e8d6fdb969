"""Progress lines of make_tfrecords (glcic_tf.data.tfrecords_progress)."""

from glcic_tf.data import tfrecords_progress


def test_format_progress():
    line = tfrecords_progress.format_progress(1200, 5000, 12, 30.0)
    assert line == ("make_tfrecords: 1200/5000 files (24%), 1188 written, 12 rejected, "
                    "40.0 images/s, about 1.6 min left")
    assert tfrecords_progress.format_progress(0, 10, 0, 0.0).endswith("0.0 images/s")
