"""A :predict request's JSON body as input arrays (tensorflow_serving/util/json_tensor.cc).

`parse_json_body` reads the body with TF Serving's parse errors; `request_to_arrays` turns the
row format (`"instances"`) or the columnar one (`"inputs"`) into one array per signature input,
checking every leaf against the input's dtype (`{"b64": ...}` or a plain string for DT_STRING,
JSON numbers within the dtype's range) and the array against the input's static shape. Error
messages follow TF Serving's wording, so clients see the same text from either server. Dense
float and string inputs are flattened in C-speed passes; anything else takes the checked walk,
which also words the errors.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from typing import Any, Mapping

import numpy as np

from glcic_tf.serving.errors import ServingError, invalid_argument, json_excerpt
from glcic_tf.serving.servable import TensorSpecInfo

# numpy dtypes of the DataType enum values JSON can express (types.proto).
_NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
                 7: object, 9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16,
                 22: np.uint32, 23: np.uint64}
_FLOAT_DTYPES = (1, 2, 19)
DT_STRING = 7


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _type_error(value: Any, spec: TensorSpecInfo) -> ServingError:
    return invalid_argument("JSON Value: ", json_excerpt(value), " Type: ", _json_type(value),
                            " is not of expected type: ", spec.dtype_name)


_INT_RANGES = {3: (-2**31, 2**31 - 1), 4: (0, 255), 5: (-2**15, 2**15 - 1), 6: (-2**31, 2**31 - 1),
               9: (-2**63, 2**63 - 1), 17: (0, 2**16 - 1), 22: (0, 2**32 - 1), 23: (0, 2**64 - 1)}


def _leaf_values(values: list, spec: TensorSpecInfo) -> list:
    """Checks (and for strings converts) the leaves of one innermost list."""
    dtype = spec.dtype
    if dtype in _FLOAT_DTYPES:
        if all(type(v) is float or type(v) is int for v in values):
            return values
        bad = next(v for v in values if not (type(v) is float or type(v) is int))
        raise _type_error(bad, spec)
    if dtype == DT_STRING:
        out = []
        for v in values:
            if type(v) is str:
                out.append(v.encode("utf-8"))
            elif isinstance(v, dict):
                if not _is_b64_object(v):
                    raise invalid_argument("JSON Value: ", json_excerpt(v),
                                           " not formatted correctly for base64 data")
                try:
                    out.append(base64.b64decode(v["b64"], validate=True))
                except (binascii.Error, ValueError):
                    raise invalid_argument("Unable to base64 decode") from None
            else:
                raise _type_error(v, spec)
        return out
    if dtype == 10:
        if all(type(v) is bool for v in values):
            return values
        raise _type_error(next(v for v in values if type(v) is not bool), spec)
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        for v in values:
            if type(v) is not int or not lo <= v <= hi:
                raise _type_error(v, spec)
        return values
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {json_excerpt(values)} to "
                                        f"type: {spec.dtype_name}")


def _dense_shape(value: Any) -> list[int]:
    """The shape implied by following the first element at each level, as TF Serving does."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], spec: TensorSpecInfo, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument("JSON Value: ", json_excerpt(value),
                                   " found at incorrect level: ", level + 1,
                                   " in the JSON DOM. Expected at level: ", rank)
        out.extend(_leaf_values([value], spec))
        return
    if level >= rank:
        raise invalid_argument("Encountered list at unexpected level: ", level, " expected < ",
                               rank)
    if len(value) != shape[level]:
        raise invalid_argument("Encountered list at unexpected size: ", len(value), " at level: ",
                               level, " expected size: ", shape[level])
    if level == rank - 1:
        if any(isinstance(v, list) for v in value):
            raise invalid_argument("Encountered list at unexpected level: ", level + 1,
                                   " expected < ", rank)
        out.extend(_leaf_values(value, spec))
        return
    for v in value:
        _fill(v, level + 1, shape, spec, out)


def _flatten_fast(value: Any, shape: list[int], spec: TensorSpecInfo) -> list | None:
    """The leaves of a dense nested list in C-speed passes, or None if anything is off."""
    items = [value]
    for dim in shape:
        if set(map(type, items)) != {list} or set(map(len, items)) != {dim}:
            return None
        items = list(itertools.chain.from_iterable(items))
    kinds = set(map(type, items))
    if spec.dtype in _FLOAT_DTYPES:
        return items if kinds <= {float, int} else None
    if spec.dtype == DT_STRING:
        return _leaf_values(items, spec) if kinds <= {str, dict} else None
    return None  # other dtypes: the checked walk


def json_to_array(value: Any, spec: TensorSpecInfo) -> np.ndarray:
    """A JSON value (scalar, nested lists, {"b64": ...}) as a dense array of the spec's dtype.

    Raises:
      ServingError: INVALID_ARGUMENT for ragged lists or values of the wrong JSON type.
    """
    shape = _dense_shape(value)
    flat = _flatten_fast(value, shape, spec)
    if flat is None:  # not dense or not the right leaf types: walk it for TF Serving's message
        flat = []
        _fill(value, 0, shape, spec, flat)
    dtype = _NUMPY_DTYPES[spec.dtype]
    if dtype is object:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    if spec.dtype in _FLOAT_DTYPES:
        finfo = np.finfo(dtype)
        arr64 = np.asarray(flat, dtype=np.float64)
        finite = np.isfinite(arr64)
        if np.any(finite & ((arr64 > finfo.max) | (arr64 < finfo.min))):
            bad = arr64[finite & ((arr64 > finfo.max) | (arr64 < finfo.min))][0]
            raise invalid_argument("Cannot convert JSON value: ", bad, " to ", spec.dtype_name,
                                   " without loss of precision.")
        return arr64.astype(dtype).reshape(shape)
    return np.asarray(flat, dtype=dtype).reshape(shape)


def _check_shape(arr: np.ndarray, spec: TensorSpecInfo, name: str, signature: str) -> None:
    if spec.shape is None:
        return
    fmt = "[" + ",".join("?" if d < 0 else str(d) for d in spec.shape) + "]"
    mismatch = any(d >= 0 and d != a for d, a in zip(spec.shape, arr.shape))
    if arr.ndim != len(spec.shape) or mismatch:
        raise invalid_argument("Input '", name, "' of signature '", signature,
                               "' expects shape ", fmt, " (", spec.dtype_name, "), got shape ",
                               list(arr.shape))


def request_to_arrays(doc: Any, input_specs: Mapping[str, TensorSpecInfo],
                      signature: str) -> tuple[str, dict[str, np.ndarray]]:
    """A predict request body (parsed JSON) as input arrays; returns ("row"|"columnar", arrays).

    Follows FillPredictRequestFromJson: exactly one of "instances" (a non-empty list of values,
    or of objects keyed by input name) and "inputs" (a value, or an object keyed by input name).
    Arrays are also checked against the signature's static shapes (rank and known dimensions).
    """
    if not input_specs:
        raise invalid_argument("Failed to get input map for signature: ", signature)
    names = sorted(input_specs)
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument("JSON Value: ", json_excerpt(doc), " Not formatted correctly "
                               "expecting only one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("JSON Value: ", json_excerpt(doc),
                                   " Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument("JSON Value: ", json_excerpt(doc),
                                   " No values in 'instances' array")
        arrays = _instances_to_arrays(instances, input_specs, names)
        fmt = "row"
    elif has_inputs:
        arrays = _inputs_to_arrays(doc["inputs"], input_specs, names)
        fmt = "columnar"
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    for name, arr in arrays.items():
        _check_shape(arr, input_specs[name], name, signature)
    return fmt, arrays


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


def _instances_to_arrays(instances: list, specs: Mapping[str, TensorSpecInfo],
                         names: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(names) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as "
                               "multiple input tensors required as per tensorinfo_map")
    as_objects = _is_named_object(instances[0])
    columns: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, item in enumerate(instances):
        if as_objects:
            if not _is_named_object(item):
                raise invalid_argument("Expecting object but got list at item ", i,
                                       " of input list")
            for key, value in item.items():
                if key not in specs:
                    raise invalid_argument("Failed to process element: ", i, " key: ", key,
                                           " of 'instances' list. Error: INVALID_ARGUMENT: JSON "
                                           "object: does not have named input: ", key)
                columns[key].append(_instance_item(value, key, specs[key], i, columns[key],
                                                   True))
            if set(item) != set(names):
                raise invalid_argument("Failed to process element: ", i, " of 'instances' list. "
                                       "JSON object: ", json_excerpt(item),
                                       " must only have keys: ", ",".join(names))
        else:
            if _is_named_object(item):
                raise invalid_argument("Expecting value/list but got object at item ", i,
                                       " of input list")
            name = names[0]
            columns[name].append(_instance_item(item, name, specs[name], i, columns[name], False))
    return {n: np.stack(c) for n, c in columns.items()}


def _instance_item(value: Any, name: str, spec: TensorSpecInfo, index: int,
                   previous: list[np.ndarray], keyed: bool) -> np.ndarray:
    where = f"Failed to process element: {index}" + (f" key: {name}" if keyed else "")
    try:
        arr = json_to_array(value, spec)
    except ServingError as e:
        raise invalid_argument(where, " of 'instances' list. Error: ", e.code, ": ",
                               e.message) from None
    if previous and previous[0].shape != arr.shape:
        first = previous[0]
        if first.size != arr.size:
            detail = f"Expecting tensor size: {first.size} but got: {arr.size}"
        else:
            detail = (f"Expecting shape [{','.join(map(str, first.shape))}] but got: "
                      f"[{','.join(map(str, arr.shape))}]")
        raise invalid_argument(where, " of 'instances' list. Error: INVALID_ARGUMENT: ", detail)
    return arr


def _inputs_to_arrays(value: Any, specs: Mapping[str, TensorSpecInfo],
                      names: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64_object(value):
        if len(names) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
        name = names[0]
        return {name: _named_input(value, name, specs[name])}
    out = {}
    for name in names:
        if name not in value:
            raise invalid_argument("Missing named input: ", name, " in 'inputs' object.")
        out[name] = _named_input(value[name], name, specs[name])
    return out


def _named_input(value: Any, name: str, spec: TensorSpecInfo) -> np.ndarray:
    try:
        return json_to_array(value, spec)
    except ServingError as e:
        raise invalid_argument("Failed to process input: ", name, " of 'inputs' object. Error: ",
                               e.code, ": ", e.message) from None


def parse_json_body(body: bytes) -> dict:
    """The request body as a JSON object, with TF Serving's parse error messages."""
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise invalid_argument("JSON Parse error: ", e.msg, " at offset: ", e.pos) from None
    except UnicodeDecodeError as e:
        raise invalid_argument("JSON Parse error: Invalid encoding in string: ", e.reason) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Value: ", json_excerpt(doc), " Is not object")
    return doc
