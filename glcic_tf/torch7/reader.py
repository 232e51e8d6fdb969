"""Reads Torch7's binary serialization (`torch.save`, binary mode) into Python values.

The format is that of torch7's `File.lua` (`writeObject`): a type tag (int32), then the value;
tables, Torch objects and functions carry an object index so that shared references are written
once. Torch objects carry a version string ("V 1") and a class name; tensors are written as
ndim, sizes, strides, 1-based storage offset and a storage object; storages as a size and raw
little-endian data. int = 4 bytes, long = `long_size` (8 on Linux and macOS, where the released
files were written). The values it returns are described in `glcic_tf.torch7.values`; every
malformed input raises `Torch7Error` naming the source and the byte offset.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from glcic_tf.torch7.values import (LEGACY_TYPE_RECUR_FUNCTION, TENSOR_DTYPES, TYPE_BOOLEAN,
                                    TYPE_FUNCTION, TYPE_NIL, TYPE_NUMBER, TYPE_RECUR_FUNCTION,
                                    TYPE_STRING, TYPE_TABLE, TYPE_TORCH, LuaFunction, Table,
                                    Torch7Error, TorchObject)

_MAX_NDIM = 64


class _Reader:
    def __init__(self, data: bytes, source: str, long_size: int):
        if long_size not in (4, 8):
            raise ValueError(f"long_size must be 4 or 8, got {long_size!r}")
        self.data = data
        self.source = source
        self.pos = 0
        self.long_fmt = "<q" if long_size == 8 else "<i"
        self.long_size = long_size
        self.objects: dict[int, Any] = {}

    def error(self, message: str, pos: int | None = None) -> Torch7Error:
        at = self.pos if pos is None else pos
        return Torch7Error(f"{self.source}: {message} (at byte {at} of {len(self.data)})")

    def _need(self, n: int, what: str) -> None:
        if n < 0:
            raise self.error(f"corrupt file: negative size {n} for {what}")
        if self.pos + n > len(self.data):
            raise self.error(f"truncated file: {what} needs {n} bytes, only "
                             f"{len(self.data) - self.pos} left")

    def _unpack(self, fmt: str, size: int, what: str):
        self._need(size, what)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def int(self, what: str) -> int:
        return self._unpack("<i", 4, what)

    def long(self, what: str) -> int:
        return self._unpack(self.long_fmt, self.long_size, what)

    def raw(self, n: int, what: str) -> bytes:
        self._need(n, what)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def string(self, what: str) -> bytes:
        return self.raw(self.int(f"length of {what}"), what)

    def read(self) -> Any:
        start = self.pos
        tag = self.int("type tag")
        if tag == TYPE_NIL:
            return None
        if tag == TYPE_NUMBER:
            return self._unpack("<d", 8, "number")
        if tag == TYPE_BOOLEAN:
            return self.int("boolean") == 1
        if tag == TYPE_STRING:
            return _decode(self.string("string"))
        if tag == TYPE_FUNCTION:  # not referenced: no object index
            dumped = self.string("function bytecode")
            return LuaFunction(dumped, self.read(), recursive=False)
        if tag not in (TYPE_TABLE, TYPE_TORCH, TYPE_RECUR_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION):
            hint = ""
            if start == 0 and self.data[:1].isdigit():
                hint = " (looks like an ASCII-mode Torch file; only binary mode is supported)"
            raise self.error(f"not a Torch7 binary file, or corrupt: unknown type tag {tag}{hint}",
                             start)
        index = self.int("object index")
        if index in self.objects:
            return self.objects[index]
        if tag == TYPE_TABLE:
            return self._table(index)
        if tag == TYPE_TORCH:
            return self._torch(index)
        dumped = self.string("function bytecode")
        fn = LuaFunction(dumped)
        self.objects[index] = fn
        fn.upvalues = self.read()
        return fn

    def _table(self, index: int) -> Table:
        size = self.int("table size")
        if size < 0 or size * 8 > len(self.data) - self.pos:  # each entry needs >= 2 tags
            raise self.error(f"corrupt or truncated file: table of {size} entries does not fit")
        table = Table()
        self.objects[index] = table
        for _ in range(size):
            key_pos = self.pos
            key = self.read()
            value = self.read()
            if key is None:
                raise self.error("corrupt file: nil table key", key_pos)
            try:
                table[key] = value
            except TypeError:
                raise self.error(f"unsupported table key of type {type(key).__name__}",
                                 key_pos) from None
        return table

    def _torch(self, index: int) -> Any:
        version_string = self.string("class version")
        if version_string.startswith(b"V "):
            try:
                version = int(float(version_string[2:]))
            except ValueError:
                raise self.error(f"corrupt file: bad class version {version_string!r}") from None
            class_name = _decode(self.string("class name"))
        else:  # written before torch7 versioned its classes
            class_name, version = _decode(version_string), 0
        if not isinstance(class_name, str) or not class_name.isprintable():
            raise self.error(f"not a Torch7 file, or corrupt: bad class name {class_name!r}")
        base = class_name[len("torch."):] if class_name.startswith("torch.") else None
        if base is not None and base.endswith("Tensor"):
            obj = self._tensor(class_name, _dtype_of(class_name, base[:-len("Tensor")], self))
        elif base is not None and base.endswith("Storage"):
            obj = self._storage(class_name, _dtype_of(class_name, base[:-len("Storage")], self))
        elif class_name.startswith("tds."):
            raise self.error(f"unsupported Torch class {class_name} (custom serializer)")
        else:
            # Classes without a custom `write` serialize their fields as one table; register the
            # object first so that fields may refer back to it.
            obj = TorchObject(class_name, None, version)
            self.objects[index] = obj
            obj.fields = self.read()
            return obj
        self.objects[index] = obj
        return obj

    def _tensor(self, class_name: str, dtype: np.dtype) -> np.ndarray:
        ndim = self.int(f"{class_name} ndim")
        if not 0 <= ndim <= _MAX_NDIM:
            raise self.error(f"corrupt file: {class_name} with {ndim} dimensions")
        sizes = [self.long(f"{class_name} size") for _ in range(ndim)]
        strides = [self.long(f"{class_name} stride") for _ in range(ndim)]
        offset = self.long(f"{class_name} storage offset") - 1  # stored 1-based
        storage = self.read()
        if ndim == 0:
            return np.zeros((0,), dtype)
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            raise self.error(f"corrupt file: {class_name} sizes {sizes}, strides {strides}, "
                             f"offset {offset + 1}")
        if 0 in sizes:
            return np.zeros(sizes, dtype)
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise self.error(f"corrupt file: {class_name} of size {sizes} has no storage")
        if storage.dtype != dtype:
            raise self.error(f"corrupt file: {class_name} refers to a {storage.dtype} storage")
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
        if last >= storage.size:
            raise self.error(f"corrupt file: {class_name} of size {sizes} (strides {strides}, "
                             f"offset {offset + 1}) reaches past its storage of {storage.size}")
        return np.ndarray(sizes, dtype, buffer=storage, offset=offset * dtype.itemsize,
                          strides=[s * dtype.itemsize for s in strides])

    def _storage(self, class_name: str, dtype: np.dtype) -> np.ndarray:
        size = self.long(f"{class_name} size")
        if size < 0:
            raise self.error(f"corrupt file: {class_name} of size {size}")
        self._need(size * dtype.itemsize, f"{class_name} of {size} elements")
        out = np.frombuffer(self.data, dtype, count=size, offset=self.pos)
        self.pos += size * dtype.itemsize
        return out


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _dtype_of(class_name: str, base: str, reader: _Reader) -> np.dtype:
    name = base[len("Cuda"):] if base.startswith("Cuda") else base
    if name not in TENSOR_DTYPES:
        raise reader.error(f"unsupported Torch tensor type {class_name}")
    return np.dtype(TENSOR_DTYPES[name])


def loads_t7(data: bytes, *, long_size: int = 8, source: str = "<bytes>") -> Any:
    """Parses one object serialized by Torch7's `torch.save` (binary mode).

    Args:
      data: the file's bytes.
      long_size: bytes of a C long where the file was written (8 on Linux/macOS, 4 on Windows).
      source: name used in error messages.

    Raises:
      Torch7Error: the data is not a Torch7 binary file, is truncated or corrupt.
    """
    reader = _Reader(bytes(data), source, long_size)
    try:
        obj = reader.read()
    except RecursionError:
        raise reader.error("objects nested too deeply to parse") from None
    except Torch7Error as e:
        if long_size == 8 and reader.pos > 4:  # a 4-byte-long file misread looks corrupt
            raise Torch7Error(f"{e}; if the file was written on Windows, try long_size=4") from e
        raise
    return obj


def read_bytes(path: str) -> bytes:
    """A file's bytes: a local path, or any URL tf.io.gfile reads (TensorFlow imported only then).

    Raises:
      FileNotFoundError: no such file.
    """
    if "://" in path:
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Torch7 file not found: {path}")
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Torch7 file not found: {path}")
    with open(path, "rb") as f:
        return f.read()


def load_t7(path: str, *, long_size: int = 8) -> Any:
    """Reads a Torch7 binary file (local path, or any URL tf.io.gfile reads). See `loads_t7`."""
    return loads_t7(read_bytes(path), long_size=long_size, source=path)
