"""Output arrays as a :predict response's JSON (`glcic_tf.serving.predict_response`), no
server: TF Serving's float formatting, both formats, `_bytes` outputs as base64."""

import base64
import json

import numpy as np
import pytest

from glcic_tf.serving.errors import ServingError
from glcic_tf.serving.predict_response import arrays_to_json


def test_arrays_to_json_matches_tf_serving():
    # Floats as TF Serving's WriteDecimal: %g, full precision when %g does not round-trip,
    # ".0" on whole numbers.
    values = np.array([[0.2, 1.0, 1e6, 1 / 3], [np.nan, np.inf, -np.inf, -2.5]], np.float32)
    text = arrays_to_json({"y": values}, "columnar")
    assert text == ('{"outputs": [[0.2, 1.0, 1e+06, 0.333333343], '
                    '[NaN, Infinity, -Infinity, -2.5]]}')
    parsed = json.loads(text)["outputs"]
    np.testing.assert_array_equal(np.asarray(parsed, np.float32)[0], values[0])
    # Row format, one output: a list of values; several outputs: a list of objects; names
    # ending in _bytes are base64.
    rows = json.loads(arrays_to_json({"y": values}, "row"))["predictions"]
    assert len(rows) == 2 and rows[0][:2] == [0.2, 1.0]
    both = json.loads(arrays_to_json(
        {"out_bytes": np.array([b"\x89PNG", b"ab"], object),
         "label": np.array([b"a", b"b"], object),
         "n": np.array([1, 2], np.int64)}, "row"))["predictions"]
    assert both[0] == {"out_bytes": {"b64": base64.b64encode(b"\x89PNG").decode()},
                       "label": "a", "n": 1}
    with pytest.raises(ServingError, match="inconsistent batch size"):
        arrays_to_json({"a": np.zeros(2), "b": np.zeros(3)}, "row")
