"""TensorFlow errors as TF Serving reports them (`glcic_tf.serving.errors`), no server."""

from glcic_tf.serving.errors import error_from_exception


def test_http_status_mapping():
    import tensorflow as tf

    e = error_from_exception(tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\n\nDetected at node x defined at (most recent call "
                    "last):\n<stack traces unavailable>\nUnknown image file format."))
    assert (e.http_status, e.message) == (400, "Unknown image file format.")
    assert error_from_exception(tf.errors.NotFoundError(None, None, "m")).http_status == 404
    assert error_from_exception(RuntimeError("boom")).http_status == 500
