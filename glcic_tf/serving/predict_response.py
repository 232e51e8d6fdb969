"""A :predict response's JSON from output arrays (tensorflow_serving/util/json_tensor.cc).

`arrays_to_json` answers in the request's format: `{"predictions": [...]}` for the row format,
`{"outputs": ...}` for the columnar one. Floats are printed as TF Serving's WriteDecimal prints
them (so answers match byte for byte where practical), and DT_STRING outputs whose name ends in
`_bytes` as `{"b64": ...}`. The text is assembled from per-element tokens, since `json.dumps`
cannot print floats the way TF Serving does.
"""

from __future__ import annotations

import base64
import json
from typing import Mapping, Sequence

import numpy as np

from glcic_tf.serving.errors import invalid_argument

BYTES_SUFFIX = "_bytes"  # TF Serving returns DT_STRING outputs with this suffix as {"b64": ...}


def _float_tokens(arr: np.ndarray) -> list[str]:
    """TF Serving's WriteDecimal for each element: "%g" (6 significant digits) when that
    round-trips, else full precision ("%.9g" for float32), ".0" appended to whole numbers,
    NaN / Infinity / -Infinity."""
    flat = np.ascontiguousarray(arr).ravel()
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float32)
    full = "%.9g" if flat.dtype == np.float32 else "%.17g"
    x = flat.astype(np.float64)
    finite = np.isfinite(x)
    # Which values survive 6 significant digits, estimated numerically (one formatting pass per
    # value instead of two); estimates are verified below.
    with np.errstate(all="ignore"):
        exponent = np.floor(np.log10(np.where(finite & (x != 0), np.abs(x), 1.0)))
        scale = 10.0 ** (5 - exponent)
        short = finite & ((np.round(x * scale) / scale).astype(flat.dtype) == flat)
    values = x.tolist()
    tokens = [("%.6g" % v) if s else (full % v) for v, s in zip(values, short.tolist())]
    idx = np.flatnonzero(short)
    if idx.size:
        back = np.array([tokens[i] for i in idx], dtype=np.float64).astype(flat.dtype)
        for i in idx[back != flat[idx]]:
            tokens[i] = full % values[i]
    for i in np.flatnonzero(~finite):
        v = values[i]
        tokens[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return [t if ("." in t or "e" in t or "N" in t or "I" in t) else t + ".0" for t in tokens]


def _tokens(arr: np.ndarray, as_bytes: bool) -> list[str]:
    """Each element of an output array (flattened) as a JSON token."""
    if arr.dtype.kind == "f":
        return _float_tokens(arr)
    if arr.dtype.kind == "b":
        return ["true" if v else "false" for v in arr.ravel().tolist()]
    if arr.dtype.kind in "iu":
        return [str(v) for v in arr.ravel().tolist()]
    if arr.dtype.kind in "OSU":
        out = []
        for v in arr.ravel().tolist():
            v = v if isinstance(v, bytes) else str(v).encode("utf-8")
            out.append('{"b64": "' + base64.b64encode(v).decode("ascii") + '"}' if as_bytes
                       else json.dumps(v.decode("utf-8", errors="replace")))
        return out
    raise invalid_argument("Failed to write JSON value for tensor type: ", arr.dtype)


def _nest(tokens: list[str], shape: Sequence[int]) -> str:
    """Flat tokens of an array of `shape` as nested JSON lists."""
    if not shape:
        return tokens[0]
    if 0 in shape:
        inner = _nest([], shape[1:]) if len(shape) > 1 else None
        return "[" + ", ".join([inner] * shape[0]) + "]" if inner else "[]"
    items = tokens
    for dim in reversed(shape):
        items = ["[" + ", ".join(items[i:i + dim]) + "]" for i in range(0, len(items), dim)]
    return items[0]


def arrays_to_json(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    """Output arrays as TF Serving's response: {"predictions": [...]} (row format: one entry per
    batch element, a value for single-output signatures, else an object) or {"outputs": ...}
    (columnar: the value, or an object for several outputs). DT_STRING outputs whose name ends
    in "_bytes" become {"b64": ...}."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {n: np.asarray(outputs[n]) for n in names}
    tokens = {n: _tokens(arrays[n], n.endswith(BYTES_SUFFIX)) for n in names}
    if fmt == "columnar":
        if len(names) == 1:
            return '{"outputs": ' + _nest(tokens[names[0]], arrays[names[0]].shape) + "}"
        body = ", ".join(json.dumps(n) + ": " + _nest(tokens[n], arrays[n].shape) for n in names)
        return '{"outputs": {' + body + "}}"
    batch = None
    for n in names:
        if arrays[n].ndim == 0:
            raise invalid_argument("Tensor name: ", n, " has no shape information ")
        size = arrays[n].shape[0]
        if size < 1:
            raise invalid_argument("Tensor name: ", n, " has invalid batch size: ", size)
        if batch is not None and size != batch:
            raise invalid_argument("Tensor name: ", n, " has inconsistent batch size: ", size,
                                   " expecting: ", batch)
        batch = size

    def item(n: str, i: int) -> str:
        shape = arrays[n].shape[1:]
        per = int(np.prod(shape, dtype=np.int64))
        return _nest(tokens[n][i * per:(i + 1) * per], shape)

    items = []
    for i in range(batch):
        if len(names) == 1:
            items.append(item(names[0], i))
        else:
            items.append("{" + ", ".join(json.dumps(n) + ": " + item(n, i) for n in names) + "}")
    return '{"predictions": [' + ",\n".join(items) + "]}"
