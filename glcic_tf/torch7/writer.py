"""Writes Python values in Torch7's binary serialization, as `torch.save` does.

The inverse of `glcic_tf.torch7.reader` (same format, same values: `glcic_tf.torch7.values`).
glcic_tf never needs to write a .t7 file to import one: the writer exists so that tests and
`glcic_tf.torch7.synthetic` can make files with the released files' layout (shared storages,
storage offsets, referenced objects) without Torch installed.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from glcic_tf.torch7.values import (TENSOR_NAMES, TYPE_BOOLEAN, TYPE_FUNCTION, TYPE_NIL,
                                    TYPE_NUMBER, TYPE_RECUR_FUNCTION, TYPE_STRING, TYPE_TABLE,
                                    TYPE_TORCH, LuaFunction, TorchObject)


class _Writer:
    def __init__(self, long_size: int):
        if long_size not in (4, 8):
            raise ValueError(f"long_size must be 4 or 8, got {long_size!r}")
        self.out = bytearray()
        self.long_fmt = "<q" if long_size == 8 else "<i"
        self.indices: dict[tuple[str, int], int] = {}
        self.alive: list = []  # keeps written objects alive so that their ids stay unique

    def int(self, value: int) -> None:
        self.out += struct.pack("<i", value)

    def long(self, value: int) -> None:
        self.out += struct.pack(self.long_fmt, value)

    def string(self, value: bytes) -> None:
        self.int(len(value))
        self.out += value

    def _reference(self, tag: int, obj: Any, role: str = "object") -> bool:
        """Writes tag + object index; True when the object itself must follow (first time).

        An array is both a tensor and, when it owns its memory, its storage: `role` keeps the
        two apart.
        """
        self.int(tag)
        key = (role, id(obj))
        if key in self.indices:
            self.int(self.indices[key])
            return False
        self.indices[key] = len(self.indices) + 1
        self.alive.append(obj)
        self.int(self.indices[key])
        return True

    def write(self, obj: Any) -> None:
        if obj is None:
            self.int(TYPE_NIL)
        elif isinstance(obj, (bool, np.bool_)):
            self.int(TYPE_BOOLEAN)
            self.int(1 if obj else 0)
        elif isinstance(obj, (int, float, np.integer, np.floating)):
            self.int(TYPE_NUMBER)
            self.out += struct.pack("<d", float(obj))
        elif isinstance(obj, (str, bytes)):
            self.int(TYPE_STRING)
            self.string(obj.encode("utf-8") if isinstance(obj, str) else obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj)
        elif isinstance(obj, TorchObject):
            if self._reference(TYPE_TORCH, obj):
                self.string(f"V {obj.version}".encode())
                self.string(obj.class_name.encode())
                self.write(obj.fields)
        elif isinstance(obj, LuaFunction):
            if not obj.recursive:
                self.int(TYPE_FUNCTION)
                self.string(obj.dumped)
                self.write(obj.upvalues)
            elif self._reference(TYPE_RECUR_FUNCTION, obj):
                self.string(obj.dumped)
                self.write(obj.upvalues)
        elif isinstance(obj, dict):
            if self._reference(TYPE_TABLE, obj):
                self.int(len(obj))
                for k, v in obj.items():
                    self.write(k)
                    self.write(v)
        elif isinstance(obj, (list, tuple)):
            if self._reference(TYPE_TABLE, obj):
                self.int(len(obj))
                for i, v in enumerate(obj, start=1):
                    self.write(i)
                    self.write(v)
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} to a Torch7 file")

    def _tensor(self, array: np.ndarray) -> None:
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        name = TENSOR_NAMES.get(np.dtype(dtype).str)
        if name is None:
            raise TypeError(f"no Torch tensor type for numpy dtype {array.dtype}")
        if not self._reference(TYPE_TORCH, array):
            return
        self.string(b"V 1")
        self.string(f"torch.{name}Tensor".encode())
        if array.size == 0:  # Torch7 writes empty tensors with 0 dimensions and no storage
            self.int(0)
            self.long(1)
            self.write(None)
            return
        if array.ndim == 0:
            array = array.reshape(1)
        storage, offset, strides = _storage_of(array)
        self.int(array.ndim)
        for n in array.shape:
            self.long(n)
        for s in strides:
            self.long(s)
        self.long(offset + 1)
        if self._reference(TYPE_TORCH, storage, role="storage"):
            self.string(b"V 1")
            self.string(f"torch.{name}Storage".encode())
            self.long(storage.size)
            self.out += storage.astype(storage.dtype.newbyteorder("<"), copy=False).tobytes()


def _storage_of(array: np.ndarray) -> tuple[np.ndarray, int, list[int]]:
    """(storage, element offset, element strides); views of one base array share its storage."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    item = array.dtype.itemsize
    if (root is not array and root.flags.c_contiguous and root.dtype == array.dtype
            and all(s >= 0 and s % item == 0 for s in array.strides)):
        start = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        end = start + sum((n - 1) * s for n, s in zip(array.shape, array.strides)) + item
        if start >= 0 and start % item == 0 and end <= root.nbytes:
            return root, start // item, [s // item for s in array.strides]
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    strides = [int(np.prod(array.shape[i + 1:])) for i in range(array.ndim)]
    return array, 0, strides


def dumps_t7(obj: Any, *, long_size: int = 8) -> bytes:
    """Serializes `obj` like Torch7's `torch.save` (binary mode, referenced).

    None, bool, numbers, str/bytes, dict (table), list/tuple (table with keys 1..n), numpy arrays
    (torch.<Type>Tensor; views of one C-contiguous base array share one storage, with offsets
    and strides), `TorchObject` and `LuaFunction`. An object written twice is written once and
    then referenced by index, as Torch does.
    """
    writer = _Writer(long_size)
    writer.write(obj)
    return bytes(writer.out)


def save_t7(path: str, obj: Any, *, long_size: int = 8) -> None:
    """Writes `dumps_t7(obj)` to a local path."""
    with open(path, "wb") as f:
        f.write(dumps_t7(obj, long_size=long_size))
