"""The Python values a Torch7 .t7 file holds, and the format's type tags and tensor types.

Torch7's `torch.save` (binary mode, torch7's `File.lua` `writeObject`) writes one value; the
reader (`glcic_tf.torch7.reader`) and the writer (`glcic_tf.torch7.writer`) map its Lua and
Torch values onto these Python ones:

nil -> None, number -> float, boolean -> bool, string -> str (bytes when not UTF-8), table ->
`Table` (a dict hashed and compared by identity, like Lua tables), tensor -> read-only numpy view
of its storage (tensors sharing a storage share memory), storage -> 1-D numpy array, other Torch
classes (nn modules) -> `TorchObject`, functions -> `LuaFunction`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# The type tag (int32) written before every value.
TYPE_NIL = 0
TYPE_NUMBER = 1
TYPE_STRING = 2
TYPE_TABLE = 3
TYPE_TORCH = 4
TYPE_BOOLEAN = 5
TYPE_FUNCTION = 6
LEGACY_TYPE_RECUR_FUNCTION = 7
TYPE_RECUR_FUNCTION = 8

# Element type of torch.<Name>Tensor / torch.<Name>Storage (CUDA types store the same bytes;
# torch.CudaTensor is float).
TENSOR_DTYPES = {
    "Float": "<f4", "Double": "<f8", "Half": "<f2", "Byte": "u1", "Char": "i1",
    "Short": "<i2", "Int": "<i4", "Long": "<i8", "": "<f4",
}
# numpy dtype -> the Torch type name the writer gives it ("Float" for float32).
TENSOR_NAMES = {np.dtype(v).str: k for k, v in TENSOR_DTYPES.items() if k}


class Torch7Error(ValueError):
    """A .t7 file cannot be parsed, or does not hold the expected completion network."""


class Table(dict):
    """A Lua table. Hashed and compared by identity (Lua semantics), so it can be a table key."""

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def list(self) -> list:
        """The values at keys 1..n (the table's array part), in order."""
        out = []
        while (len(out) + 1) in self:
            out.append(self[len(out) + 1])
        return out


@dataclasses.dataclass(eq=False)
class TorchObject:
    """An instance of a Torch class other than a tensor or storage (e.g. `nn.ReLU`).

    Attributes:
      class_name: the full Torch class name, e.g. "nn.SpatialConvolution" or "cudnn.ReLU".
      fields: the serialized object, for nn modules a `Table` of its fields.
      version: the class version written with it ("V 1" -> 1; 0 for unversioned files).
    """

    class_name: str
    fields: Any = None
    version: int = 1

    @property
    def kind(self) -> str:
        """The class name after the last '.', so nn.X, cudnn.X and cunn.X are handled alike."""
        return self.class_name.rsplit(".", 1)[-1]

    def get(self, key: str, default: Any = None) -> Any:
        if isinstance(self.fields, dict):
            return self.fields.get(key, default)
        return default

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def __contains__(self, key: str) -> bool:
        return isinstance(self.fields, dict) and key in self.fields

    def __repr__(self) -> str:
        keys = sorted(str(k) for k in self.fields) if isinstance(self.fields, dict) else []
        return f"TorchObject({self.class_name!r}, fields={keys})"


@dataclasses.dataclass(eq=False)
class LuaFunction:
    """A serialized Lua function: its bytecode (never executed here) and upvalues."""

    dumped: bytes
    upvalues: Any = None
    recursive: bool = True


def module(class_name: str, **fields) -> TorchObject:
    """A Torch object with the given fields, e.g. `module("nn.ReLU", inplace=True)`."""
    return TorchObject(class_name, Table(fields), 1)
