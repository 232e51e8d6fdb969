"""An embedded server that speaks TensorFlow Serving's REST API, for SavedModels from glcic_tf.

`tensorflow/serving` is what production runs (see serving/README.md); this module serves the same
exports with the same REST contract from Python (Starlette + uvicorn) where the container is not
available: laptops, CI, the contract tests in tests/test_serving.py. It implements

* `GET  /v1/models/NAME[/versions/V | /labels/L]`            model status
* `GET  /v1/models/NAME[/versions/V | /labels/L]/metadata`   signature defs
* `POST /v1/models/NAME[/versions/V | /labels/L]:predict`    row (`instances`) or columnar
  (`inputs`) format, `{"b64": ...}` for bytes, `signature_name` (default `serving_default`)

with TF Serving's JSON shapes, its error messages where practical and its mapping of error codes
to HTTP statuses (400 bad request, 404 unknown model or version, 500 internal, ...), plus a body
size limit (413) that TF Serving does not have. It does not implement gRPC, `:classify`,
`:regress` or request batching.

Models live under a base path as TF Serving expects (BASE/VERSION/saved_model.pb). A background
thread polls the base path every `poll_wait_seconds`; a new version is loaded while the old one
keeps serving, then swapped in (TF Serving's "latest 1" policy with availability preservation).
A version directory without saved_model.pb (still being written) is ignored; a version that
fails to load is reported with state END and its error, and retried when its files change.

Inference runs in a thread pool, off the event loop, so status requests answer while predictions
run. Nothing happens at import time; TensorFlow is imported when the first model loads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import itertools
import dataclasses
import json
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

logger = logging.getLogger("glcic_tf.serving")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# An oversized body is still read (and dropped) up to this many bytes so that the client reads the
# 413 answer instead of a connection reset; beyond it the connection is closed.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
BYTES_SUFFIX = "_bytes"  # TF Serving returns DT_STRING outputs with this suffix as {"b64": ...}

# tensorflow/core/protobuf/error_codes.proto, by value.
ERROR_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
               "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
               "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
               "UNAUTHENTICATED")

# tensorflow_serving/model_servers/http_server.cc: ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# TF Serving's URL grammar (http_rest_api_util.cc), case-insensitive like the original.
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE)

# ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


class ServingError(Exception):
    """A request failed; `code` is a TF error code name (or an HTTP status for 413)."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def _invalid(*parts: Any) -> ServingError:
    return ServingError("INVALID_ARGUMENT", "".join(str(p) for p in parts))


def error_from_exception(e: BaseException) -> ServingError:
    """Maps a TensorFlow error (tf.errors.OpError) or any exception to a ServingError."""
    if isinstance(e, ServingError):
        return e
    code = getattr(e, "error_code", None)
    message = getattr(e, "message", None)
    if isinstance(code, int) and 0 < code < len(ERROR_CODES) and isinstance(message, str):
        return ServingError(ERROR_CODES[code], _strip_eager_context(message))
    return ServingError("INTERNAL", f"{type(e).__name__}: {e}")


def _strip_eager_context(message: str) -> str:
    """Drops the Python-only "Graph execution error: Detected at node ... (most recent call
    last): <traceback>" preamble, leaving the op's own message as TF Serving reports it."""
    if not message.startswith("Graph execution error:"):
        return message
    lines = message.split("\n")[1:]
    while lines and (not lines[0].strip() or lines[0].startswith(("Detected at node", " ", "\t"))
                     or lines[0].strip() == "<stack traces unavailable>"):
        lines.pop(0)
    return "\n".join(lines) or message


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model, as an entry of TF Serving's model_config_list.

    Attributes:
      name: the model name in URLs.
      base_path: directory holding integer version subdirectories.
      policy: "latest" (the `num_versions` highest versions), "all" or "specific".
      num_versions: with policy "latest".
      versions: with policy "specific".
      labels: version labels (`/labels/stable`) -> version.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name or "/" in self.name or ":" in self.name:
            raise ValueError(f"model name must be non-empty without '/' or ':', got {self.name!r}")
        if not self.base_path:
            raise ValueError(f"model {self.name!r}: base_path is empty")
        if self.policy not in ("latest", "all", "specific"):
            raise ValueError(f"model {self.name!r}: policy must be latest, all or specific, "
                             f"got {self.policy!r}")
        if self.policy == "latest" and self.num_versions < 1:
            raise ValueError(f"model {self.name!r}: num_versions must be >= 1, "
                             f"got {self.num_versions}")
        if self.policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: policy 'specific' needs versions")

    def aspired(self, available: Sequence[int]) -> set[int]:
        """The versions this policy wants loaded, given those present on disk."""
        if self.policy == "all":
            return set(available)
        if self.policy == "specific":
            return set(available) & set(self.versions)
        return set(sorted(available, reverse=True)[:self.num_versions])


def parse_model_config_file(path: str) -> list[ModelConfig]:
    """Reads a TF Serving ModelServerConfig text proto (serving/models.config).

    Only model_platform "tensorflow" is served. Relative base paths are taken relative to the
    current directory, as tensorflow_model_server does.

    Raises:
      ValueError: the file does not parse or describes something this server cannot serve.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a ModelServerConfig text proto: {e}") from e
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{path}: expected a model_config_list")
    models = []
    for m in config.model_config_list.config:
        if m.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {m.name!r}: model_platform must be 'tensorflow', "
                             f"got {m.model_platform!r}")
        choice = m.model_version_policy.WhichOneof("policy_choice") or "latest"
        models.append(ModelConfig(
            name=m.name, base_path=os.path.abspath(m.base_path), policy=choice,
            num_versions=max(1, m.model_version_policy.latest.num_versions),
            versions=tuple(m.model_version_policy.specific.versions),
            labels=dict(m.version_labels)))
    if not models:
        raise ValueError(f"{path}: model_config_list has no models")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate model names in {names}")
    return models


# --------------------------------------------------------------------------------------------
# Servables
# --------------------------------------------------------------------------------------------

def list_versions(base_path: str) -> dict[int, str]:
    """Complete version directories under a base path: {version: path}.

    A version is a subdirectory named by a non-negative integer that contains saved_model.pb
    (or .pbtxt); anything else (a half-copied version, a temp dir) is ignored.
    """
    try:
        names = os.listdir(base_path)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(base_path, name)
        if any(os.path.isfile(os.path.join(path, f))
               for f in ("saved_model.pb", "saved_model.pbtxt")):
            out[int(name)] = path
    return out


def _fingerprint(path: str) -> tuple:
    """Changes when a version's files are rewritten; a failed load is retried only then."""
    stats = []
    for rel in ("saved_model.pb", "saved_model.pbtxt", os.path.join("variables",
                                                                    "variables.index")):
        try:
            st = os.stat(os.path.join(path, rel))
            stats.append((rel, st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return tuple(stats)


def _read_meta_graph(path: str):
    """The MetaGraphDef tagged "serve" of a SavedModel directory."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt"), encoding="utf-8") as f:
            text_format.Parse(f.read(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path}: SavedModel has no MetaGraph tagged 'serve'")


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """An input or output of a signature, from its SignatureDef TensorInfo."""

    dtype: int  # types_pb2.DataType enum value
    dtype_name: str  # TF's DataTypeString: "float", "string", ...
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension


# DataTypeString() of the enum values JSON can express (types.proto).
_DTYPE_NAMES = {1: "float", 2: "double", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
                7: "string", 9: "int64", 10: "bool", 17: "uint16", 19: "half", 22: "uint32",
                23: "uint64"}
_NUMPY_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
                 7: object, 9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16,
                 22: np.uint32, 23: np.uint64}
_FLOAT_DTYPES = (1, 2, 19)
DT_STRING = 7


def _tensor_spec(info) -> TensorSpecInfo:
    shape = None if info.tensor_shape.unknown_rank else tuple(
        int(d.size) for d in info.tensor_shape.dim)
    return TensorSpecInfo(int(info.dtype), _DTYPE_NAMES.get(int(info.dtype), str(info.dtype)),
                          shape)


class Servable:
    """One loaded SavedModel version: its signatures, specs and TF Serving metadata JSON."""

    def __init__(self, name: str, version: int, path: str):
        import tensorflow as tf
        from google.protobuf import json_format, wrappers_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        self.name, self.version, self.path = name, version, path
        meta_graph = _read_meta_graph(path)
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self.functions = dict(self._loaded.signatures)
        self.signature_defs = {k: v for k, v in meta_graph.signature_def.items()}
        self.inputs = {k: {n: _tensor_spec(i) for n, i in v.inputs.items()}
                       for k, v in self.signature_defs.items()}
        self.outputs = {k: {n: _tensor_spec(i) for n, i in v.outputs.items()}
                        for k, v in self.signature_defs.items()}
        # GetModelMetadata's JSON as tensorflow_model_server prints it (http_rest_api_util.cc:
        # model_spec and the unpacked SignatureDefMap, proto field names, defaults printed).
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in self.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig)
        spec = model_pb2.ModelSpec(name=name, version=wrappers_pb2.Int64Value(value=version))
        opts = dict(preserving_proto_field_name=True, including_default_value_fields=True)
        self.metadata = {
            "model_spec": json_format.MessageToDict(spec, **opts),
            "metadata": {"signature_def": json_format.MessageToDict(sig_map, **opts)},
        }

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls a signature on numpy inputs; TF errors propagate as tf.errors.OpError."""
        import tensorflow as tf

        fn = self.functions.get(signature)
        if fn is None:
            raise _invalid("Serving signature name: \"", signature,
                           "\" is not callable in this SavedModel")
        feed = {}
        for name, value in inputs.items():
            spec = self.inputs[signature][name]
            feed[name] = tf.constant(value, dtype=tf.dtypes.as_dtype(spec.dtype))
        outputs = fn(**feed)
        return {k: v.numpy() for k, v in outputs.items()}


# --------------------------------------------------------------------------------------------
# Model manager
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Version:
    state: str
    path: str
    fingerprint: tuple = ()
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None


class ModelManager:
    """Loads, swaps and unloads versions of the configured models; thread-safe.

    Args:
      models: the models to serve.
      poll_wait_seconds: seconds between scans of the base paths by the background thread
        (`start()`); 0 scans once, at start.
      loader: builds a servable from (name, version, path); `Servable` by default.
    """

    def __init__(self, models: Sequence[ModelConfig], poll_wait_seconds: float = 1.0,
                 loader: Callable[[str, int, str], Any] = Servable):
        if poll_wait_seconds < 0:
            raise ValueError(f"poll_wait_seconds must be >= 0, got {poll_wait_seconds}")
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise ValueError(f"duplicate model names in {[m.name for m in models]}")
        self.poll_wait_seconds = poll_wait_seconds
        self._loader = loader
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, _Version]] = {m.name: {} for m in models}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_empty: set[str] = set()

    # --- loading -------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Scans every base path once; loads new aspired versions, then unloads old ones."""
        for model in self.models.values():
            self._poll_model(model)

    def _poll_model(self, model: ModelConfig) -> None:
        on_disk = list_versions(model.base_path)
        if not on_disk and model.name not in self._warned_empty:
            logger.warning("No versions of model %s found under base path %s", model.name,
                           model.base_path)
            self._warned_empty.add(model.name)
        aspired = model.aspired(list(on_disk))
        for version in sorted(aspired, reverse=True):  # newest first: it serves "latest"
            path = on_disk[version]
            fingerprint = _fingerprint(path)
            with self._lock:
                record = self._versions[model.name].get(version)
                if record is not None and (record.state == AVAILABLE or (
                        record.state == END and record.error_code != "OK"
                        and record.fingerprint == fingerprint)):
                    continue  # loaded, or failed before with these very files
                self._versions[model.name][version] = _Version(LOADING, path, fingerprint)
            logger.info("Loading model %s version %d from %s", model.name, version, path)
            try:
                servable = self._loader(model.name, version, path)
            except Exception as e:  # noqa: BLE001 - any load failure is reported in the status
                err = error_from_exception(e)
                code = err.code if err.code != "INTERNAL" else "UNKNOWN"
                logger.error("Failed to load model %s version %d: %s", model.name, version,
                             err.message)
                with self._lock:
                    self._versions[model.name][version] = _Version(
                        END, path, fingerprint, code, f"Failed to load {path}: {err.message}")
                continue
            with self._lock:
                self._versions[model.name][version] = _Version(AVAILABLE, path, fingerprint,
                                                               servable=servable)
            logger.info("Model %s version %d is AVAILABLE", model.name, version)
        # Unload what is no longer aspired, but never the last available version while no
        # aspired one is available (TF Serving's availability-preserving policy).
        with self._lock:
            versions = self._versions[model.name]
            any_aspired_up = any(v in aspired and r.state == AVAILABLE
                                 for v, r in versions.items())
            for v, r in versions.items():
                keep = not any_aspired_up and v in on_disk
                if r.state == AVAILABLE and v not in aspired and not keep:
                    logger.info("Unloading model %s version %d", model.name, v)
                    versions[v] = _Version(END, r.path, r.fingerprint)

    def start(self) -> None:
        """Loads what is on disk now, then keeps polling in a daemon thread."""
        self.poll_once()
        if self.poll_wait_seconds > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll_loop, name="glcic-model-poller",
                                            daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; the error is logged
                logger.exception("Polling the model base paths failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # --- lookups -------------------------------------------------------------------------------

    def _label_version(self, name: str, label: str) -> int:
        model = self.models.get(name)
        if model is None or label not in model.labels:
            raise _invalid("Unrecognized servable version label: ", label)
        return model.labels[label]

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> dict[str, Any]:
        """GetModelStatusResponse as JSON: every known version, newest first."""
        if label is not None:
            version = self._label_version(name, label)
        with self._lock:
            versions = dict(self._versions.get(name, {}))
        if version is not None:
            if version not in versions:
                raise ServingError("NOT_FOUND",
                                   f"Could not find version {version} of model {name}")
            versions = {version: versions[version]}
        elif not versions:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        return {"model_version_status": [
            {"version": str(v), "state": r.state,
             "status": {"error_code": r.error_code, "error_message": r.error_message}}
            for v, r in sorted(versions.items(), reverse=True)]}

    def servable(self, name: str, version: int | None = None,
                 label: str | None = None) -> Servable:
        """The servable a request addresses: latest available, a version or a label."""
        if label is not None:
            version = self._label_version(name, label)
        with self._lock:
            versions = self._versions.get(name, {})
            if version is None:
                up = [v for v, r in versions.items() if r.state == AVAILABLE]
                if up:
                    return versions[max(up)].servable
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            record = versions.get(version)
            if record is not None and record.state == AVAILABLE:
                return record.servable
        raise ServingError("NOT_FOUND",
                           f"Servable not found for request: Specific({name}, {version})")

    def available(self) -> dict[str, list[int]]:
        with self._lock:
            return {n: sorted(v for v, r in vs.items() if r.state == AVAILABLE)
                    for n, vs in self._versions.items()}


# --------------------------------------------------------------------------------------------
# JSON <-> tensors (tensorflow_serving/util/json_tensor.cc semantics)
# --------------------------------------------------------------------------------------------

def _json_str(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
    return _invalid("JSON Value: ", _json_str(value), " Type: ", _json_type(value),
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
                    raise _invalid("JSON Value: ", _json_str(v),
                                   " not formatted correctly for base64 data")
                try:
                    out.append(base64.b64decode(v["b64"], validate=True))
                except (binascii.Error, ValueError):
                    raise _invalid("Unable to base64 decode") from None
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
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {_json_str(values)} to "
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
            raise _invalid("JSON Value: ", _json_str(value), " found at incorrect level: ",
                           level + 1, " in the JSON DOM. Expected at level: ", rank)
        out.extend(_leaf_values([value], spec))
        return
    if level >= rank:
        raise _invalid("Encountered list at unexpected level: ", level, " expected < ", rank)
    if len(value) != shape[level]:
        raise _invalid("Encountered list at unexpected size: ", len(value), " at level: ", level,
                       " expected size: ", shape[level])
    if level == rank - 1:
        if any(isinstance(v, list) for v in value):
            raise _invalid("Encountered list at unexpected level: ", level + 1,
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
            raise _invalid("Cannot convert JSON value: ", bad, " to ", spec.dtype_name,
                           " without loss of precision.")
        return arr64.astype(dtype).reshape(shape)
    return np.asarray(flat, dtype=dtype).reshape(shape)


def _check_shape(arr: np.ndarray, spec: TensorSpecInfo, name: str, signature: str) -> None:
    if spec.shape is None:
        return
    fmt = "[" + ",".join("?" if d < 0 else str(d) for d in spec.shape) + "]"
    mismatch = any(d >= 0 and d != a for d, a in zip(spec.shape, arr.shape))
    if arr.ndim != len(spec.shape) or mismatch:
        raise _invalid("Input '", name, "' of signature '", signature, "' expects shape ", fmt,
                       " (", spec.dtype_name, "), got shape ", list(arr.shape))


def request_to_arrays(doc: Any, input_specs: Mapping[str, TensorSpecInfo],
                      signature: str) -> tuple[str, dict[str, np.ndarray]]:
    """A predict request body (parsed JSON) as input arrays; returns ("row"|"columnar", arrays).

    Follows FillPredictRequestFromJson: exactly one of "instances" (a non-empty list of values,
    or of objects keyed by input name) and "inputs" (a value, or an object keyed by input name).
    Arrays are also checked against the signature's static shapes (rank and known dimensions).
    """
    if not input_specs:
        raise _invalid("Failed to get input map for signature: ", signature)
    names = sorted(input_specs)
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise _invalid("JSON Value: ", _json_str(doc), " Not formatted correctly expecting only "
                       "one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _invalid("JSON Value: ", _json_str(doc),
                           " Excepting 'instances' to be an list/array")
        if not instances:
            raise _invalid("JSON Value: ", _json_str(doc), " No values in 'instances' array")
        arrays = _instances_to_arrays(instances, input_specs, names)
        fmt = "row"
    elif has_inputs:
        arrays = _inputs_to_arrays(doc["inputs"], input_specs, names)
        fmt = "columnar"
    else:
        raise _invalid("Missing 'inputs' or 'instances' key")
    for name, arr in arrays.items():
        _check_shape(arr, input_specs[name], name, signature)
    return fmt, arrays


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


def _instances_to_arrays(instances: list, specs: Mapping[str, TensorSpecInfo],
                         names: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(names) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple "
                       "input tensors required as per tensorinfo_map")
    as_objects = _is_named_object(instances[0])
    columns: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, item in enumerate(instances):
        if as_objects:
            if not _is_named_object(item):
                raise _invalid("Expecting object but got list at item ", i, " of input list")
            for key, value in item.items():
                if key not in specs:
                    raise _invalid("Failed to process element: ", i, " key: ", key,
                                   " of 'instances' list. Error: INVALID_ARGUMENT: JSON object: "
                                   "does not have named input: ", key)
                columns[key].append(_instance_item(value, key, specs[key], i, columns[key],
                                                   True))
            if set(item) != set(names):
                raise _invalid("Failed to process element: ", i, " of 'instances' list. JSON "
                               "object: ", _json_str(item), " must only have keys: ",
                               ",".join(names))
        else:
            if _is_named_object(item):
                raise _invalid("Expecting value/list but got object at item ", i,
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
        raise _invalid(where, " of 'instances' list. Error: ", e.code, ": ", e.message) from None
    if previous and previous[0].shape != arr.shape:
        first = previous[0]
        if first.size != arr.size:
            detail = f"Expecting tensor size: {first.size} but got: {arr.size}"
        else:
            detail = (f"Expecting shape [{','.join(map(str, first.shape))}] but got: "
                      f"[{','.join(map(str, arr.shape))}]")
        raise _invalid(where, " of 'instances' list. Error: INVALID_ARGUMENT: ", detail)
    return arr


def _inputs_to_arrays(value: Any, specs: Mapping[str, TensorSpecInfo],
                      names: list[str]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64_object(value):
        if len(names) > 1:
            raise _invalid("inputs is a plain value/list, but expecting an object as multiple "
                           "input tensors required as per tensorinfo_map")
        name = names[0]
        return {name: _named_input(value, name, specs[name])}
    out = {}
    for name in names:
        if name not in value:
            raise _invalid("Missing named input: ", name, " in 'inputs' object.")
        out[name] = _named_input(value[name], name, specs[name])
    return out


def _named_input(value: Any, name: str, spec: TensorSpecInfo) -> np.ndarray:
    try:
        return json_to_array(value, spec)
    except ServingError as e:
        raise _invalid("Failed to process input: ", name, " of 'inputs' object. Error: ",
                       e.code, ": ", e.message) from None


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
    raise _invalid("Failed to write JSON value for tensor type: ", arr.dtype)


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
        raise _invalid("Cannot convert empty tensor map to JSON")
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
            raise _invalid("Tensor name: ", n, " has no shape information ")
        size = arrays[n].shape[0]
        if size < 1:
            raise _invalid("Tensor name: ", n, " has invalid batch size: ", size)
        if batch is not None and size != batch:
            raise _invalid("Tensor name: ", n, " has inconsistent batch size: ", size,
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


def parse_json_body(body: bytes) -> dict:
    """The request body as a JSON object, with TF Serving's parse error messages."""
    if not body.strip():
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise _invalid("JSON Parse error: ", e.msg, " at offset: ", e.pos) from None
    except UnicodeDecodeError as e:
        raise _invalid("JSON Parse error: Invalid encoding in string: ", e.reason) from None
    except RecursionError:
        raise _invalid("JSON Parse error: The document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise _invalid("JSON Value: ", _json_str(doc), " Is not object")
    return doc


def predict(manager: ModelManager, name: str, version: int | None, label: str | None,
            body: bytes) -> str:
    """Handles one :predict request body end to end (blocking); returns the response JSON."""
    doc = parse_json_body(body)
    signature = doc.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise _invalid("JSON Value: ", _json_str(doc), " not formatted correctly. "
                       "'signature_name' key must be a string value.")
    signature = signature or DEFAULT_SIGNATURE
    servable = manager.servable(name, version, label)
    if signature not in servable.signature_defs:
        raise _invalid("Serving signature name: \"", signature, "\" not found in signature def")
    fmt, arrays = request_to_arrays(doc, servable.inputs[signature], signature)
    del doc
    try:
        outputs = servable.run(signature, arrays)
    except ServingError:
        raise
    except (TypeError, ValueError) as e:  # argument binding of the concrete function
        raise _invalid("Signature '", signature, "' rejected the inputs: ", e) from None
    return arrays_to_json(outputs, fmt)


# --------------------------------------------------------------------------------------------
# ASGI app
# --------------------------------------------------------------------------------------------

def _error_response(err: ServingError):
    from starlette.responses import Response

    return Response(json.dumps({"error": err.message}), status_code=err.http_status,
                    media_type="application/json")


async def _read_body(request, limit: int) -> bytes:
    """Reads the body, answering 413 beyond `limit` bytes (Content-Length and streamed size)."""
    declared = request.headers.get("content-length")
    too_large = None
    if declared is not None:
        try:
            if int(declared) > limit:
                too_large = int(declared)
        except ValueError:
            raise _invalid("Content-Length is not an integer: ", declared) from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if too_large is None and total > limit:
            too_large = total
            chunks.clear()
        if too_large is not None:
            if total > limit + MAX_DRAIN_BYTES:
                break  # stop draining; the connection is closed after the answer
            continue
        chunks.append(chunk)
    if too_large is not None:
        raise ServingError("RESOURCE_EXHAUSTED",
                           f"Request body of {'at least ' if declared is None else ''}"
                           f"{too_large} bytes exceeds the limit of {limit} bytes "
                           f"(--max_body_bytes)", http_status=413)
    return b"".join(chunks)


def _parse_path(method: str, path: str):
    """(kind, name, version, label, method) for a /v1/ path, after TF Serving's regexes."""
    if method == "POST":
        m = _PREDICT_RE.fullmatch(path)
        if m:
            return "post", m.group(1), m.group(2), m.group(3), m.group(4).lower()
    elif method == "GET":
        m = _STATUS_RE.fullmatch(path)
        if m:
            kind = "metadata" if m.group(4) else "status"
            return kind, m.group(1) or "", m.group(2), m.group(3), None
    raise _invalid("Malformed request: ", method, " ", path)


def create_app(manager: ModelManager, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               num_threads: int = 4, timeout_seconds: float = 0.0, manage_lifecycle: bool = True,
               ui: bool = True):
    """The ASGI app (Starlette) serving TF Serving's REST API for a ModelManager.

    Args:
      manager: the models.
      max_body_bytes: larger request bodies get 413.
      num_threads: threads running predictions (JSON decoding, the model, JSON encoding).
      timeout_seconds: a prediction not answered within this many seconds gets 504 (0: none).
      manage_lifecycle: start the manager (initial load, then polling) when the app starts and
        stop it at shutdown.
      ui: serve the completion page (`glcic_tf.serving_ui`) at /ui, and redirect / to it; both
        are off the /v1/ paths, so the REST API is the same either way.
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    executor = concurrent.futures.ThreadPoolExecutor(num_threads,
                                                     thread_name_prefix="glcic-predict")

    def json_response(payload: Any) -> Response:
        return Response(json.dumps(payload, indent=1), media_type="application/json")

    async def handle(request):
        path = request.url.path  # already percent-decoded, as TF Serving decodes names
        if not _V1_RE.fullmatch(path):
            return _error_response(ServingError("NOT_FOUND", f"Not found: {path}"))
        try:
            kind, name, version, label, method = _parse_path(request.method, path)
            version = int(version) if version is not None else None
            if version is not None and version >= 2**63:
                raise _invalid("Failed to convert version: ", version, " to numeric.")
            if kind in ("status", "metadata") and not name:
                raise _invalid("Missing model name in request.")
            if kind == "status":
                return json_response(manager.status(name, version, label))
            if kind == "metadata":
                return json_response(manager.servable(name, version, label).metadata)
            if method != "predict":
                raise ServingError("UNIMPLEMENTED", f":{method} is not implemented by the "
                                   "embedded server; only :predict is")
            body = await _read_body(request, max_body_bytes)
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(executor, predict, manager, name, version, label, body)
            del body
            if timeout_seconds > 0:
                try:
                    text = await asyncio.wait_for(work, timeout_seconds)
                except asyncio.TimeoutError:
                    raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
            else:
                text = await work
            return Response(text, media_type="application/json")
        except ServingError as e:
            return _error_response(e)
        except Exception as e:  # noqa: BLE001 - TF errors are client errors; others internal
            err = error_from_exception(e)
            if err.http_status >= 500:
                logger.exception("Internal error on %s %s", request.method, path)
            return _error_response(err)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage_lifecycle:
            await asyncio.get_running_loop().run_in_executor(None, manager.start)
        try:
            yield
        finally:
            if manage_lifecycle:
                manager.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    routes = []
    if ui:
        from starlette.responses import RedirectResponse

        from glcic_tf import serving_ui

        names = list(manager.models)

        async def page(request):
            return serving_ui.page_response(names)

        async def to_page(request):
            return RedirectResponse(serving_ui.UI_PATH)

        routes += [Route(serving_ui.UI_PATH, page, methods=["GET", "HEAD"]),
                   Route("/", to_page, methods=["GET", "HEAD"])]
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    routes.append(Route("/{path:path}", handle, methods=methods))
    return Starlette(routes=routes, lifespan=lifespan)


# --------------------------------------------------------------------------------------------
# Entry point used by serving/server.py
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """tensorflow_model_server-like options of the embedded server (see serving/server.py)."""

    models: tuple[ModelConfig, ...]
    rest_api_port: int = 8501
    rest_api_host: str = "127.0.0.1"
    file_system_poll_wait_seconds: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    num_threads: int = 4
    rest_api_timeout_in_ms: int = 30_000
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    log_level: str = "info"
    access_log: bool = False
    ui: bool = True
    inbrowser: bool = False


def _bind(host: str, port: int):
    """A listening-ready TCP socket bound to host:port (port 0: a free one, read it back)."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


@contextlib.contextmanager
def serving_in_thread(app, host: str = "127.0.0.1", port: int = 0,
                      timeout_seconds: float = 120.0):
    """Serves an ASGI app with uvicorn in a background thread; yields its base URL.

    The socket is bound here and its port read back (port 0: any free one), so two callers
    never race for a probed port. For notebooks, tests and scripts that drive the server from
    the same process; the app's lifespan (model loading) runs before the URL is yielded.
    """
    import uvicorn

    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=sock.getsockname()[1],
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="glcic-serving", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_seconds
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the embedded server stopped while starting (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded server did not start in {timeout_seconds} s")
            time.sleep(0.02)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        yield f"http://{shown}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_seconds)
        sock.close()


def serve(options: ServerOptions) -> None:
    """Loads the models and serves the REST API until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    logging.basicConfig(level=options.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.intra_op_parallelism or options.inter_op_parallelism:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_parallelism)
    manager = ModelManager(options.models, options.file_system_poll_wait_seconds)
    app = create_app(manager, max_body_bytes=options.max_body_bytes,
                     num_threads=options.num_threads,
                     timeout_seconds=options.rest_api_timeout_in_ms / 1000.0, ui=options.ui)
    sock = _bind(options.rest_api_host, options.rest_api_port)
    port = sock.getsockname()[1]  # the real one when --rest_api_port is 0
    logger.info("Serving %s on http://%s:%d/v1/models/...",
                ", ".join(m.name for m in options.models), options.rest_api_host, port)
    if options.ui:
        from glcic_tf import serving_ui

        logger.info("Completion page: %s", serving_ui.page_url(options.rest_api_host, port))
        if options.inbrowser:
            serving_ui.open_in_browser_when_up(options.rest_api_host, port)
    server = uvicorn.Server(uvicorn.Config(
        app, host=options.rest_api_host, port=port, log_level=options.log_level,
        access_log=options.access_log, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
