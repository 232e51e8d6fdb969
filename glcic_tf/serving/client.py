"""Clients for a served GLCIC model: TF Serving's REST API (httpx) and its gRPC API.

Both talk to `tensorflow/serving` and the REST one also to the embedded server
(`serving/server.py`). The request builders are pure functions, testable without a server:

* `rest_predict_body(inputs, signature_name, format)`: the JSON body of `:predict`, row format
  (`instances`) or columnar (`inputs`); bytes become `{"b64": ...}`.
* `build_predict_request(model, inputs, ...)`: a `tensorflow.serving.PredictRequest` proto.

`RestClient.complete(image_png, mask_png)` and `GrpcClient.complete(...)` run the
`serving_default` signature (encoded images in, PNG out). Server errors raise `ServingError` with
the HTTP status (REST) or gRPC status code and the server's message.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
FORMATS = ("rows", "columns")


class ServingError(RuntimeError):
    """The server rejected a request. `status` is the HTTP status or the gRPC code name."""

    def __init__(self, status: int | str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------
# REST
# --------------------------------------------------------------------------------------------

def _to_json_value(value: Any) -> Any:
    """bytes -> {"b64": ...}; numpy arrays -> nested lists; lists recursively."""
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return [_to_json_value(v) for v in value]
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def rest_predict_body(inputs: Mapping[str, Any], signature_name: str = DEFAULT_SIGNATURE,
                      format: str = "rows") -> dict:
    """The JSON body of a REST `:predict` request.

    Args:
      inputs: input name -> batch of values (a list or an array whose first axis is the batch);
        bytes values are sent as {"b64": ...}.
      signature_name: the signature to run.
      format: "rows" (`instances`: one object per batch element) or "columns" (`inputs`).

    Raises:
      ValueError: unknown format, no inputs, or inputs with different batch sizes.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not inputs:
        raise ValueError("inputs is empty: give at least one named input")
    columns = {name: _to_json_value(value) for name, value in inputs.items()}
    for name, col in columns.items():
        if not isinstance(col, list):
            raise ValueError(f"input {name!r} must be a batch (list or array), got "
                             f"{type(inputs[name]).__name__}")
    sizes = {name: len(col) for name, col in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs have different batch sizes: {sizes}")
    body: dict[str, Any] = {"signature_name": signature_name}
    if format == "columns":
        body["inputs"] = columns
    else:
        n = next(iter(sizes.values()))
        body["instances"] = [{name: col[i] for name, col in columns.items()} for i in range(n)]
    return body


def decode_b64(value: Any) -> Any:
    """{"b64": ...} -> bytes, recursively through lists and dicts."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [decode_b64(v) for v in value]
    if isinstance(value, dict):
        return {k: decode_b64(v) for k, v in value.items()}
    return value


def rest_outputs(response: Mapping[str, Any]) -> dict[str, list]:
    """A `:predict` response (either format) as output name -> batch list, b64 decoded.

    Single-output signatures answer without the output name; it is returned under "" then.
    """
    if "predictions" in response:
        preds = response["predictions"]
        if preds and isinstance(preds[0], dict) and set(preds[0]) != {"b64"}:
            return {k: [decode_b64(p[k]) for p in preds] for k in preds[0]}
        return {"": decode_b64(preds)}
    if "outputs" in response:
        outs = response["outputs"]
        if isinstance(outs, dict) and set(outs) != {"b64"}:
            return {k: decode_b64(v) for k, v in outs.items()}
        return {"": decode_b64(outs)}
    raise ValueError(f"not a predict response: keys {sorted(response)}")


class RestClient:
    """TF Serving REST client for one model.

    Args:
      url: server root, e.g. "http://localhost:8501".
      model: model name.
      version: a specific version (default: the latest), or
      label: a version label.
      timeout: seconds per request.
    """

    def __init__(self, url: str, model: str, *, version: int | None = None,
                 label: str | None = None, timeout: float = 60.0):
        import httpx

        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.url = url.rstrip("/")
        self.model = model
        suffix = f"/versions/{int(version)}" if version is not None else (
            f"/labels/{label}" if label is not None else "")
        self.model_url = f"{self.url}/v1/models/{model}{suffix}"
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, response) -> dict:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ServingError(response.status_code, message or response.text[:500])
        if not isinstance(payload, dict):
            raise ServingError(response.status_code, "response is not a JSON object")
        return payload

    def status(self) -> dict:
        """GET /v1/models/NAME: {"model_version_status": [...]}."""
        return self._check(self._http.get(self.model_url))

    def metadata(self) -> dict:
        """GET /v1/models/NAME/metadata: model_spec and signature defs."""
        return self._check(self._http.get(self.model_url + "/metadata"))

    def predict(self, inputs: Mapping[str, Any], signature_name: str = DEFAULT_SIGNATURE,
                format: str = "rows") -> dict:
        """POST :predict; returns the raw JSON response."""
        body = rest_predict_body(inputs, signature_name, format)
        return self._check(self._http.post(self.model_url + ":predict", json=body))

    def complete(self, image: bytes | Sequence[bytes], mask: bytes | Sequence[bytes],
                 format: str = "rows") -> bytes | list[bytes]:
        """Completes encoded image(s) with encoded mask(s) (white = hole); returns PNG bytes."""
        single = isinstance(image, (bytes, bytearray))
        images = [image] if single else list(image)
        masks = [mask] if isinstance(mask, (bytes, bytearray)) else list(mask)
        out = rest_outputs(self.predict({"image_bytes": images, "mask_bytes": masks},
                                        DEFAULT_SIGNATURE, format))
        pngs = out.get("completed_bytes", out.get(""))
        if pngs is None:
            raise ServingError(200, f"no completed_bytes in the response (outputs {list(out)})")
        return pngs[0] if single else pngs

    def complete_arrays(self, image: np.ndarray, mask: np.ndarray,
                        format: str = "columns") -> np.ndarray:
        """The `complete` signature: float images (B, H, W, 3) in [0, 1] and masks (B, H, W, 1)."""
        out = rest_outputs(self.predict({"image": np.asarray(image, np.float32),
                                         "mask": np.asarray(mask, np.float32)},
                                        "complete", format))
        return np.asarray(out.get("completed", out.get("")), np.float32)


# --------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------

def make_tensor_proto(value: Any):
    """A TensorProto for a batch: bytes/str lists become DT_STRING, numbers keep their dtype."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (bytes, bytearray, str)) for v in value):
        strings = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(strings))])
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape,
                                      string_val=strings)
    arr = np.asarray(value)
    dtypes = {np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.float64): types_pb2.DT_DOUBLE,
              np.dtype(np.int32): types_pb2.DT_INT32, np.dtype(np.int64): types_pb2.DT_INT64,
              np.dtype(np.uint8): types_pb2.DT_UINT8, np.dtype(np.bool_): types_pb2.DT_BOOL}
    if arr.dtype not in dtypes:
        raise ValueError(f"unsupported dtype {arr.dtype} for a TensorProto; use float32, "
                         f"float64, int32, int64, uint8, bool or a list of bytes")
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in arr.shape])
    return tensor_pb2.TensorProto(dtype=dtypes[arr.dtype], tensor_shape=shape,
                                  tensor_content=arr.astype(arr.dtype.newbyteorder("<"))
                                  .tobytes())


def tensor_proto_to_array(proto) -> np.ndarray | list[bytes]:
    """A TensorProto from a PredictResponse as a numpy array (DT_STRING: a list of bytes)."""
    import tensorflow as tf

    if proto.dtype == 7:  # DT_STRING
        return list(proto.string_val)
    return tf.make_ndarray(proto)


def _model_spec(spec, model: str, signature_name: str, version: int | None, label: str | None):
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")
    spec.name = model
    spec.signature_name = signature_name
    if version is not None:
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = label


def build_predict_request(model: str, inputs: Mapping[str, Any],
                          signature_name: str = DEFAULT_SIGNATURE, *, version: int | None = None,
                          label: str | None = None):
    """A PredictRequest: model_spec (name, signature, version or label) and input tensors."""
    from tensorflow_serving.apis import predict_pb2

    if not inputs:
        raise ValueError("inputs is empty: give at least one named input")
    request = predict_pb2.PredictRequest()
    _model_spec(request.model_spec, model, signature_name, version, label)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(make_tensor_proto(value))
    return request


def build_status_request(model: str, *, version: int | None = None):
    """A GetModelStatusRequest for a model (all versions, or one)."""
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = int(version)
    return request


class GrpcClient:
    """TF Serving gRPC client (PredictionService.Predict, ModelService.GetModelStatus).

    Args:
      target: "host:port" of tensorflow_model_server's gRPC port (8500 by default).
      model: model name.
      version / label: as `RestClient`.
      timeout: seconds per call.
      max_message_bytes: gRPC send/receive limit (images are large).
    """

    def __init__(self, target: str, model: str, *, version: int | None = None,
                 label: str | None = None, timeout: float = 60.0,
                 max_message_bytes: int = 64 * 1024 * 1024):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.model, self.version, self.label, self.timeout = model, version, label, timeout
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code().name, e.details() or str(e)) from None

    def status(self) -> list[dict]:
        """[{"version": int, "state": str, "error_code": int, "error_message": str}, ...]."""
        from tensorflow_serving.apis import get_model_status_pb2

        response = self._call(self._models.GetModelStatus,
                              build_status_request(self.model, version=self.version))
        states = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": states.Name(s.state),
                 "error_code": s.status.error_code, "error_message": s.status.error_message}
                for s in response.model_version_status]

    def predict(self, inputs: Mapping[str, Any], signature_name: str = DEFAULT_SIGNATURE):
        """Predict; returns output name -> array (DT_STRING outputs: list of bytes)."""
        request = build_predict_request(self.model, inputs, signature_name,
                                        version=self.version, label=self.label)
        response = self._call(self._predict.Predict, request)
        return {k: tensor_proto_to_array(v) for k, v in response.outputs.items()}

    def complete(self, image: bytes | Sequence[bytes],
                 mask: bytes | Sequence[bytes]) -> bytes | list[bytes]:
        """As `RestClient.complete`, over gRPC."""
        single = isinstance(image, (bytes, bytearray))
        images = [bytes(image)] if single else [bytes(i) for i in image]
        masks = [bytes(mask)] if isinstance(mask, (bytes, bytearray)) else [bytes(m) for m in mask]
        out = self.predict({"image_bytes": images, "mask_bytes": masks})["completed_bytes"]
        return out[0] if single else out
