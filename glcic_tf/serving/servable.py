"""One loaded SavedModel version: its signatures, their input and output specs, its metadata.

`Servable` is what the model manager loads per version and what a request runs: it reads the
MetaGraphDef tagged "serve" for the signature defs (the specs the JSON codec decodes requests
against, and GetModelMetadata's JSON), loads the SavedModel with `tf.saved_model.load` and
calls a signature on numpy inputs. TensorFlow is imported when the first servable loads.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np

from glcic_tf.serving.errors import invalid_argument


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
            raise invalid_argument("Serving signature name: \"", signature,
                                   "\" is not callable in this SavedModel")
        feed = {}
        for name, value in inputs.items():
            spec = self.inputs[signature][name]
            feed[name] = tf.constant(value, dtype=tf.dtypes.as_dtype(spec.dtype))
        outputs = fn(**feed)
        return {k: v.numpy() for k, v in outputs.items()}
