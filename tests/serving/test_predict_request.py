"""A :predict request's JSON as input arrays (`glcic_tf.serving.predict_request`), no server:
dtypes, shapes, both formats and TF Serving's error messages."""

import numpy as np
import pytest

from glcic_tf.serving.errors import ServingError
from glcic_tf.serving.predict_request import json_to_array, parse_json_body, request_to_arrays
from glcic_tf.serving.servable import TensorSpecInfo

FLOAT = TensorSpecInfo(1, "float", (-1, -1, -1, 3))
STRING = TensorSpecInfo(7, "string", (-1,))


def test_json_to_array_shapes_and_errors():
    arr = json_to_array([[1, 2.5], [3, 4]], FLOAT)
    assert arr.dtype == np.float32 and arr.shape == (2, 2)
    np.testing.assert_array_equal(arr, [[1, 2.5], [3, 4]])
    strings = json_to_array([{"b64": "aGk="}, "yo"], STRING)
    assert strings.tolist() == [b"hi", b"yo"]
    with pytest.raises(ServingError, match="unexpected size: 1 at level: 1"):
        json_to_array([[1, 2], [3]], FLOAT)
    with pytest.raises(ServingError, match="incorrect level"):
        json_to_array([[1, 2], 3], FLOAT)
    with pytest.raises(ServingError, match='"x" Type: String is not of expected type: float'):
        json_to_array([1.0, "x"], FLOAT)
    with pytest.raises(ServingError, match="Type: True is not of expected type"):
        json_to_array([1.0, True], FLOAT)
    with pytest.raises(ServingError, match="without loss of precision"):
        json_to_array([1e39], FLOAT)
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        json_to_array([{"b64": "***"}], STRING)
    with pytest.raises(ServingError, match="Type: Number is not of expected type: string"):
        json_to_array([1], STRING)


def test_request_to_arrays_formats():
    specs = {"image": FLOAT, "mask": TensorSpecInfo(1, "float", (-1, -1, -1, 1))}
    img, msk = np.zeros((2, 2, 3)).tolist(), np.ones((2, 2, 1)).tolist()
    fmt, arrays = request_to_arrays(
        {"instances": [{"image": img, "mask": msk}] * 3}, specs, "complete")
    assert fmt == "row" and arrays["image"].shape == (3, 2, 2, 3)
    fmt, arrays = request_to_arrays(
        {"inputs": {"image": [img], "mask": [msk], "ignored": 1}}, specs, "complete")
    assert fmt == "columnar" and arrays["mask"].shape == (1, 2, 2, 1)
    with pytest.raises(ServingError, match="expects shape \\[\\?,\\?,\\?,1\\]"):
        request_to_arrays({"inputs": {"image": [img], "mask": [img]}}, specs, "c")
    with pytest.raises(ServingError, match="Missing named input: mask"):
        request_to_arrays({"inputs": {"image": [img]}}, specs, "complete")
    with pytest.raises(ServingError, match="must only have keys: image,mask"):
        request_to_arrays({"instances": [{"image": img}]}, specs, "complete")
    with pytest.raises(ServingError, match="No values in 'instances'"):
        request_to_arrays({"instances": []}, specs, "complete")
    single = {"x": TensorSpecInfo(1, "float", (-1, 2))}
    fmt, arrays = request_to_arrays({"instances": [[1, 2], [3, 4]]}, single, "s")
    np.testing.assert_array_equal(arrays["x"], [[1, 2], [3, 4]])


def test_parse_json_body_errors():
    with pytest.raises(ServingError, match="The document is empty"):
        parse_json_body(b"  ")
    with pytest.raises(ServingError, match="JSON Parse error: .* at offset: 1"):
        parse_json_body(b"{x")
    with pytest.raises(ServingError, match="Is not object"):
        parse_json_body(b"[]")
    assert parse_json_body(b'{"a": NaN}')["a"] != 0  # TF Serving accepts NaN
